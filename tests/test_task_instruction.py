"""lmtune/tasks/instruction.py: the prompt template, prompt/response tokens, and what the loss can see."""
import numpy as np
import pytest
import torch
import transformers

from lmtune.data import examples
from lmtune.tasks.instruction import instruction_prompt
from task_helpers import EOS, bound, ds, fp, tok  # noqa: F401 (fixtures)

INS = bound("instruction")


def chunked(split, mode, block_size):
    return bound("instruction", chunk={"mode": mode, "block_size": block_size}).examples(split, EOS, "here")


def test_instruction_prompt_has_context_block_only_when_present(fp):
    with_ctx = instruction_prompt(fp, "Summarize this.", "Some context.")
    assert with_ctx == "### Instruction:\nSummarize this.\n\n### Context:\nSome context.\n\n### Response:\n"
    for empty in ("", "   ", None):
        assert instruction_prompt(fp, "Name a color.", empty) == "### Instruction:\nName a color.\n\n### Response:\n"
    assert INS.prompt("Name a color.") == "### Instruction:\nName a color.\n\n### Response:\n"


def test_flatten_dolly_record(fp):
    rec = {"instruction": "Name a color.", "context": "", "response": " Blue. ", "category": "open_qa"}
    out = INS.flatten_record(rec)
    assert out == {"prompt": "### Instruction:\nName a color.\n\n### Response:\n", "response": "Blue."}
    assert not INS.keep_flat({"prompt": "x", "response": "  "})
    assert INS.source_fields() == ["instruction", "context", "response"]


def test_instruction_tokens_are_prompt_response_eos(tok):
    b = {"prompt": ["### Instruction:\nHi\n\n### Response:\n"], "response": ["Hello there."]}
    out = INS.tokenize_batch(tok, b)
    p = tok(b["prompt"][0], add_special_tokens=False)["input_ids"]
    r = tok(b["response"][0], add_special_tokens=False)["input_ids"]
    assert out["input_ids"][0] == p + r + [EOS] and out["prompt_length"][0] == len(p)


def test_pad_masks_prompt_and_padding():
    ids = [[5, 6, 7, 8, 9], [1, 2, 3]]
    out = examples.pad_examples(ids, 8, pad_id=EOS, prompt_lengths=[2, 1])
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9, EOS, EOS, EOS], [1, 2, 3, EOS, EOS, EOS, EOS, EOS]]
    assert out["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 3 + [0] * 5]
    assert out["labels"].tolist() == [[-100, -100, 7, 8, 9, -100, -100, -100], [-100, 2, 3] + [-100] * 5]
    # truncation keeps the first block_size tokens; causal LM pad (no prompt) scores every real token
    lm = examples.pad_examples([[1, 2, 3, 4, 5, 6]], 4, pad_id=0)
    assert lm["input_ids"].tolist() == [[1, 2, 3, 4]] and lm["labels"].tolist() == [[1, 2, 3, 4]]


def test_chunk_drops_examples_without_a_response_token():
    feats = INS.token_features(np.dtype(np.uint16))
    split = ds({"input_ids": [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7]], "prompt_length": [2, 6]}, feats)
    out = chunked(split, "pad", 5)  # the second's response is cut off
    assert out.column("input_ids").to_pylist() == [[1, 2, 3, 4, EOS]]
    assert out.column("labels").to_pylist() == [[-100, -100, 3, 4, -100]]
    # packed: example 1 (4 tokens) alone in its row, padded; example 2 (7 > 5) in a row of its own, truncated to
    # prompt tokens only, so it is dropped
    packed = chunked(split, "pack", 5)
    assert packed.column("input_ids").to_pylist() == [[1, 2, 3, 4, EOS]]
    assert packed.column("labels").to_pylist() == [[-100, -100, 3, 4, -100]]
    assert packed.column("position_ids").to_pylist() == [[0, 1, 2, 3, 0]]
    # two short examples share a row, positions restarting at the second
    two = chunked(ds({"input_ids": [[1, 2, 3], [4, 5]], "prompt_length": [1, 1]}, feats), "pack", 5)
    assert two.column("input_ids").to_pylist() == [[1, 2, 3, 4, 5]]
    assert two.column("labels").to_pylist() == [[-100, 2, 3, -100, 5]]
    assert two.column("position_ids").to_pylist() == [[0, 1, 2, 0, 1]]


# ---- what the loss sees -------------------------------------------------------------------------

def _bigram_model(vocab):
    """A 0-layer GPT-2: position t's logits depend only on token t, so any change in the loss from
    editing a token far from the response can only come from that token being a scored target."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_layer=0, n_embd=16, n_head=2, n_positions=128)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _loss(model, tok, fp, instruction, response, masked=True):
    b = {"prompt": [instruction_prompt(fp, instruction)], "response": [response]}
    t = INS.tokenize_batch(tok, b)
    out = examples.pad_examples(t["input_ids"], 64, EOS, t["prompt_length"] if masked else None)
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
