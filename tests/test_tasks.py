"""The task functions (lmtune.tasks): flatten, tokenize, chunk per task, and what the loss can see."""
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml

from conftest import ROOT
from lmtune import params, tasks
from lmtune.errors import UserError
from lmtune.gpt2_bpe import build_gpt2_tokenizer

EOS = 50256


@pytest.fixture(scope="module")
def tok():
    with tempfile.TemporaryDirectory() as tmp:
        t = build_gpt2_tokenizer(Path(tmp))
    t.pad_token = t.eos_token
    return t


@pytest.fixture(scope="module")
def fp():
    return params.load(ROOT / "params.yaml").flatten


def flat(fp, **changes):
    return fp.model_copy(update=changes)


# ---- flatten ------------------------------------------------------------------------------------

def test_instruction_prompt_has_context_block_only_when_present(fp):
    with_ctx = tasks.instruction_prompt(fp, "Summarize this.", "Some context.")
    assert with_ctx == "### Instruction:\nSummarize this.\n\n### Context:\nSome context.\n\n### Response:\n"
    for empty in ("", "   ", None):
        assert tasks.instruction_prompt(fp, "Name a color.", empty) == "### Instruction:\nName a color.\n\n### Response:\n"


def test_flatten_dolly_record(fp):
    rec = {"instruction": "Name a color.", "context": "", "response": " Blue. ", "category": "open_qa"}
    out = tasks.flatten_record("instruction", fp, rec)
    assert out == {"prompt": "### Instruction:\nName a color.\n\n### Response:\n", "response": "Blue."}
    assert not tasks.keep_flat("instruction", {"prompt": "x", "response": "  "})


def test_flatten_eli5_nested_answers(fp):
    rec = {"title": "Why?", "answers": {"a_id": ["a", "b"], "text": ["First answer.", "Second one."], "score": [3, 1]}}
    out = tasks.flatten_record("causal_lm", flat(fp, text_fields=["answers.text"], joiner=" "), rec)
    assert out == {"text": "First answer. Second one."}


def test_flatten_classification_pair_and_labels(fp):
    rte = flat(fp, text_field="sentence1", text_pair_field="sentence2", label_names=["entailment", "not_entailment"])
    rec = {"sentence1": "A man sings.", "sentence2": "A person sings.", "label": 1, "idx": 7}
    assert tasks.flatten_record("classification", rte, rec) == {"text": "A man sings.", "text_pair": "A person sings.", "label": 1}
    # a named label maps through label_names; an unknown or out-of-range one is a one-line UserError naming the key
    assert tasks.flatten_record("classification", rte, {**rec, "label": "entailment"})["label"] == 0
    with pytest.raises(UserError, match="flatten.label_names"):
        tasks.flatten_record("classification", rte, {**rec, "label": "maybe"})
    with pytest.raises(UserError, match="flatten.label_field"):
        tasks.flatten_record("classification", rte, {**rec, "label": 2})


# ---- tokenize + chunk ---------------------------------------------------------------------------

def test_instruction_tokens_are_prompt_response_eos(tok):
    b = {"prompt": ["### Instruction:\nHi\n\n### Response:\n"], "response": ["Hello there."]}
    out = tasks.tokenize_batch("instruction", tok, b, None)
    p = tok(b["prompt"][0], add_special_tokens=False)["input_ids"]
    r = tok(b["response"][0], add_special_tokens=False)["input_ids"]
    assert out["input_ids"][0] == p + r + [EOS] and out["prompt_length"][0] == len(p)


def test_pad_masks_prompt_and_padding():
    ids = [[5, 6, 7, 8, 9], [1, 2, 3]]
    out = tasks.pad_examples(ids, 8, pad_id=EOS, prompt_lengths=[2, 1])
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9, EOS, EOS, EOS], [1, 2, 3, EOS, EOS, EOS, EOS, EOS]]
    assert out["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 3 + [0] * 5]
    assert out["labels"].tolist() == [[-100, -100, 7, 8, 9, -100, -100, -100], [-100, 2, 3] + [-100] * 5]
    # truncation keeps the first block_size tokens; causal LM pad (no prompt) scores every real token
    lm = tasks.pad_examples([[1, 2, 3, 4, 5, 6]], 4, pad_id=0)
    assert lm["input_ids"].tolist() == [[1, 2, 3, 4]] and lm["labels"].tolist() == [[1, 2, 3, 4]]


def test_pack_keeps_prompt_labels_masked():
    out = tasks.pack_examples([[10, 11, 12, 13], [20, 21, 22, 23, 24]], [2, 3], block_size=3)
    assert out["input_ids"].tolist() == [[10, 11, 12], [13, 20, 21], [22, 23, 24]]
    assert out["labels"].tolist() == [[-100, -100, 12], [13, -100, -100], [-100, 23, 24]]
    assert out["attention_mask"].min() == 1


def _ds(cols, features):
    import datasets

    return datasets.Dataset.from_dict(cols, features=features)


def test_build_chunks_drops_examples_without_a_response_token():
    feats = tasks.token_features("instruction", np.dtype(np.uint16))
    ds = _ds({"input_ids": [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7]], "prompt_length": [2, 6]}, feats)
    out = tasks.build_chunks("instruction", ds, "pad", 5, EOS)  # the second's response is cut off
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, EOS]]
    assert out["labels"].tolist() == [[-100, -100, 3, 4, -100]]


def test_classification_pair_joined_by_attended_eos(tok):
    b = {"text": ["A man sings."], "text_pair": ["A person sings."], "label": [0]}
    out = tasks.tokenize_batch("classification", tok, b, None)
    a = tok("A man sings.", add_special_tokens=False)["input_ids"]
    assert out["input_ids"][0][: len(a) + 1] == a + [EOS] and out["label"] == [0]
    feats = tasks.token_features("classification", np.dtype(np.uint16))
    chunks = tasks.build_chunks("classification", _ds(out, feats), "pad", 32, EOS)
    n = len(out["input_ids"][0])
    assert chunks["attention_mask"][0, len(a)] == 1  # the separator is attended, not masked
    assert chunks["attention_mask"][0].sum() == n and chunks["labels"].tolist() == [0]


# ---- what the loss sees -------------------------------------------------------------------------

def _bigram_model(vocab):
    """A 0-layer GPT-2: position t's logits depend only on token t, so any change in the loss from
    editing a token far from the response can only come from that token being a scored target."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_layer=0, n_embd=16, n_head=2, n_positions=128)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _loss(model, tok, fp, instruction, response, masked=True):
    b = {"prompt": [tasks.instruction_prompt(fp, instruction)], "response": [response]}
    t = tasks.tokenize_batch("instruction", tok, b, None)
    out = tasks.pad_examples(t["input_ids"], 64, EOS, t["prompt_length"] if masked else None)
    batch = {k: torch.as_tensor(v.astype(np.int64)) for k, v in out.items()}
    with torch.no_grad():
        return model(**batch).loss.item()


def test_loss_sees_response_tokens_but_not_prompt_tokens(tok, fp):
    model = _bigram_model(len(tok))
    base = _loss(model, tok, fp, "Name a colour of the sky.", "Blue.")
    # Only prompt tokens differ (same length): the masked loss is unchanged...
    assert _loss(model, tok, fp, "Name a colour of the sea.", "Blue.") == pytest.approx(base, abs=1e-6)
    # ...a response token differs: the loss changes.
    assert abs(_loss(model, tok, fp, "Name a colour of the sky.", "Green.") - base) > 1e-4
    # Control: without the prompt mask the same prompt edit does change the loss, so the check above can fail.
    unmasked = _loss(model, tok, fp, "Name a colour of the sky.", "Blue.", masked=False)
    assert abs(_loss(model, tok, fp, "Name a colour of the sea.", "Blue.", masked=False) - unmasked) > 1e-4


def test_lora_wraps_only_adapters_and_named_head():
    lp = params.LoraParams(enabled=True, r=2, alpha=4, dropout=0.0, target_modules=["c_attn"], modules_to_save=["score"])
    cfg = transformers.GPT2Config(vocab_size=100, n_layer=1, n_embd=16, n_head=2, n_positions=32, num_labels=3, pad_token_id=0)
    model = tasks.with_lora(transformers.GPT2ForSequenceClassification(cfg), "classification", lp)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    with pytest.raises(UserError, match="lora.target_modules"):
        tasks.with_lora(transformers.GPT2LMHeadModel(cfg), "causal_lm", lp.model_copy(update={"target_modules": ["q_proj"]}))


def test_task_cross_field_rules_name_the_key():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["task"] = "classification"
    with pytest.raises(UserError) as e:
        params.validate(raw)
    assert "flatten.label_names" in str(e.value) and "chunk.mode" in str(e.value)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["lora"] = {**raw["lora"], "enabled": True, "target_modules": []}
    raw["flatten"] = {**raw["flatten"], "instruction_template": "no placeholder"}
    with pytest.raises(UserError) as e:
        params.validate(raw)
    assert "lora.target_modules" in str(e.value) and "flatten.instruction_template" in str(e.value)
