"""lmtune/tasks/classification.py: labels, pairs joined by an attended eos, one padded example per row,
LoRA on the head, the confusion-matrix plot and the params rules."""
import numpy as np
import pytest
import transformers
import yaml

from conftest import ROOT
from lmtune import params, tasks
from lmtune.errors import UserError
from lmtune.eval.evaluation import confusion_csv
from lmtune.models import lora
from task_helpers import EOS, bound, ds, tok  # noqa: F401 (fixtures)

CLF = bound("classification", classification={"label_names": ["neg", "pos"]}, chunk={"mode": "pad", "block_size": 32})


def test_flatten_classification_pair_and_labels():
    rte = bound("classification", classification={"text_field": "sentence1", "text_pair_field": "sentence2",
                                           "label_names": ["entailment", "not_entailment"]})
    rec = {"sentence1": "A man sings.", "sentence2": "A person sings.", "label": 1, "idx": 7}
    assert rte.flatten_record(rec) == {"text": "A man sings.", "text_pair": "A person sings.", "label": 1}
    # a named label maps through label_names; an unknown or out-of-range one is a one-line UserError naming the key
    assert rte.flatten_record({**rec, "label": "entailment"})["label"] == 0
    with pytest.raises(UserError, match="classification.label_names"):
        rte.flatten_record({**rec, "label": "maybe"})
    with pytest.raises(UserError, match="classification.label_field"):
        rte.flatten_record({**rec, "label": 2})


def test_classification_pair_joined_by_attended_eos(tok):
    b = {"text": ["A man sings."], "text_pair": ["A person sings."], "label": [0]}
    out = CLF.tokenize_batch(tok, b)
    a = tok("A man sings.", add_special_tokens=False)["input_ids"]
    assert out["input_ids"][0][: len(a) + 1] == a + [EOS] and out["label"] == [0]
    chunks = CLF.examples(ds(out, CLF.token_features(np.dtype(np.uint16))), EOS, "here")
    n = len(out["input_ids"][0])
    mask = np.asarray(chunks.column("attention_mask").to_pylist())
    assert mask[0, len(a)] == 1  # the separator is attended, not masked
    assert mask[0].sum() == n and chunks.column("labels").to_pylist() == [0]


def test_lora_wraps_only_adapters_and_named_head():
    lp = params.LoraParams(enabled=True, r=2, alpha=4, dropout=0.0, target_modules=["c_attn"], modules_to_save=["score"])
    cfg = transformers.GPT2Config(vocab_size=100, n_layer=1, n_embd=16, n_head=2, n_positions=32, num_labels=3, pad_token_id=0)
    model = lora.with_lora(transformers.GPT2ForSequenceClassification(cfg), CLF.head, lp)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    with pytest.raises(UserError, match="lora.target_modules"):
        lora.with_lora(transformers.GPT2LMHeadModel(cfg), bound("causal_lm").head, lp.model_copy(update={"target_modules": ["q_proj"]}))


def test_confusion_csv_has_one_row_per_example():
    csv = confusion_csv({"confusion_matrix": [[2, 0], [1, 1]], "support": {"yes": 2, "no": 2}})
    assert csv.splitlines() == ["actual,predicted", "yes,yes", "yes,yes", "no,yes", "no,no"]
    assert confusion_csv({"loss": 1.0, "n_tokens": 3}) == "actual,predicted\n"  # a language model's numbers


def test_task_cross_field_rules_name_the_key():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["task"] = "classification"
    p = params.validate(raw)  # the schema alone: task code is not imported to validate params
    with pytest.raises(UserError) as e:
        tasks.load(p)  # the task's own checks run where it is loaded
    assert str(e.value) == (
        "params.yaml: 2 problem(s): classification.label_names must list at least 2 class names; "
        "chunk.mode must be 'pad' when task is 'classification' (one example per row)")
    # A shared section's problem and the running task's own section's, in one message.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["task"] = "instruction"
    raw["lora"] = {**raw["lora"], "enabled": True, "target_modules": []}
    raw["instruction"] = {**raw["instruction"], "instruction_template": "no placeholder"}
    with pytest.raises(UserError) as e:
        tasks.validate(raw)
    assert str(e.value) == (
        "params.yaml: 2 problem(s): lora.target_modules must name at least one module when lora.enabled is "
        "true; instruction.instruction_template must contain {instruction}")
