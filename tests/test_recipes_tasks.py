"""The instruction and classification recipes end to end (dolly; rte with LoRA, then emotion in the same
workspace): the same runner and checks as tests/test_recipes.py, in a file of their own so that
`make test`'s two workers (pytest-xdist, one file per worker at a time) run them beside the LM recipes."""
import json
import sys

import datasets
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, make_repo
from lmtune.cli import recipe
from test_recipes import EOS, FIX, read, run_recipe, shown_experiments


@pytest.mark.slow
def test_dolly_end_to_end(tmp_path):
    repo = make_repo(tmp_path / "repo")
    run_recipe(repo, "dolly")
    root = repo.path
    flat = datasets.load_from_disk(root / "data/flat")
    assert set(flat["train"].column_names) == {"prompt", "response"}
    prompts = list(flat["train"]["prompt"]) + list(flat["validation"]["prompt"])
    assert all(p.startswith("### Instruction:\n") and p.endswith("### Response:\n") for p in prompts)
    rows = [json.loads(l) for l in (ROOT / FIX / "dolly/train.jsonl").read_text().splitlines()]
    assert sum("### Context:" in p for p in prompts) == sum(bool(r["context"]) for r in rows) > 0
    tokens = datasets.load_from_disk(root / "data/tokens")["train"]
    chunks = datasets.load_from_disk(root / "data/chunks")["train"].with_format("numpy")
    t0, c0 = tokens[0], chunks[0]
    k = len(t0["input_ids"])
    assert (c0["labels"][: t0["prompt_length"]] == -100).all()  # prompt
    assert (c0["labels"][t0["prompt_length"]:k] == c0["input_ids"][t0["prompt_length"]:k]).all()  # response + eos
    assert c0["input_ids"][k - 1] == EOS and (c0["labels"][k:] == -100).all() and c0["attention_mask"][k:].sum() == 0
    ev = read(repo, "metrics/eval.json")
    val = datasets.load_from_disk(root / "data/chunks")["validation"].with_format("numpy")[:]
    assert ev["tuned"]["n_tokens"] == int((val["labels"][:, 1:] != -100).sum())  # responses only
    assert ev["tuned"]["loss"] < ev["base"]["loss"]
    samples = json.loads((root / "models/export/samples.json").read_text())
    assert samples and all(s["input"] == f"### Instruction:\n{s['prompt']}\n\n### Response:\n" for s in samples)
    out = repo.run(sys.executable, "-m", "lmtune.cli.generate", "--prompt", "Name a color.", "--strategy", "greedy",
                   "--max-new-tokens", "3").stdout
    assert "### Instruction:\nName a color.\n\n### Response:\n" in out
    assert "dolly" in shown_experiments(repo)


@pytest.fixture(scope="module")
def clf_repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("recipes_clf") / "repo")


def check_classifier(repo, name):
    root = repo.path
    names = recipe.load(name)["classification"]["label_names"]
    ev = read(repo, "metrics/eval.json")
    n_val = sum(1 for _ in open(ROOT / FIX / name / "validation.jsonl"))
    refs = [json.loads(l)["label"] for l in open(ROOT / FIX / name / "validation.jsonl")]
    for m in ev.values():
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and m["n_examples"] == n_val
        assert m["support"] == {n: refs.count(i) for i, n in enumerate(names)}
        assert sum(m["predicted_counts"].values()) == n_val
    rows = (root / "metrics/confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 1 + n_val
    correct = sum(a == p for a, p in (r.split(",") for r in rows[1:]))
    assert correct == round(ev["tuned"]["accuracy"] * n_val)
    cfg = json.loads((root / "models/export/config.json").read_text())
    assert [cfg["id2label"][str(i)] for i in range(len(names))] == names and cfg["label2id"][names[-1]] == len(names) - 1
    assert cfg["pad_token_id"] == EOS
    samples = json.loads((root / "models/export/samples.json").read_text())
    assert samples and all(s["label"] in names and s["base_label"] in names for s in samples)
    # against the base LM's config, training adds the head and its labels, nothing else
    base = json.loads((root / "models/base/config.json").read_text())
    changed = {k for k in base.keys() | cfg.keys() if base.get(k) != cfg.get(k)}
    assert changed <= {"architectures", "id2label", "label2id", "problem_type"}, changed
    assert cfg["use_cache"] is True and cfg["architectures"] == ["GPT2ForSequenceClassification"]
    return ev


# Merging computes W + scale * B @ A once instead of adding x @ A.T @ B.T * scale at every layer: float32
# rounding, measured at 3e-8 on the rte logits. Dropping the LoRA delta (`unload()` instead of
# `merge_and_unload()`) moves them by ~2e-3 after the 2 training steps, so 1e-5 tells the two apart.
MERGE_TOL = 1e-5


def check_lora_export(root, lora: dict) -> None:
    """The merged export against the adapter it came from, with transformers and peft only (not lmtune's
    loaders, which evaluate and export share): the same logits as the unmerged PeftModel on the validation
    examples, and weights that are the base's plus exactly the adapters' delta."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    export = AutoModelForSequenceClassification.from_pretrained(root / "models/export", use_safetensors=True).eval()
    cfg = export.config

    def base():
        return AutoModelForSequenceClassification.from_pretrained(
            root / "models/base", use_safetensors=True, num_labels=cfg.num_labels, pad_token_id=cfg.pad_token_id)

    unmerged = PeftModel.from_pretrained(base(), root / "models/final").eval()
    # What the bug the tolerance must catch exports: the trained head kept, the LoRA delta dropped.
    dropped = PeftModel.from_pretrained(base(), root / "models/final").unload().eval()
    val = datasets.load_from_disk(root / "data/chunks")["validation"].with_format("torch")[:]
    x = {"input_ids": val["input_ids"].long(), "attention_mask": val["attention_mask"].long()}
    with torch.no_grad():
        merged_logits, adapter_logits, no_lora_logits = export(**x).logits, unmerged(**x).logits, dropped(**x).logits
    assert merged_logits.shape == (len(val["input_ids"]), cfg.num_labels)
    err, lora_effect = (merged_logits - adapter_logits).abs().max(), (adapter_logits - no_lora_logits).abs().max()
    assert err < MERGE_TOL < lora_effect, (err, lora_effect)  # the adapters matter here, and the merge keeps them

    # Weights: c_attn = base + (alpha / r) * (B @ A)^T (GPT-2's Conv1D stores W as in x out); all else as the base.
    merged = load_file(root / "models/export/model.safetensors")
    plain = load_file(root / "models/base/model.safetensors")
    adapter = {k.removeprefix("base_model.model."): v for k, v in load_file(root / "models/final/adapter_model.safetensors").items()}
    scale = lora["alpha"] / lora["r"]
    targets = [k.removesuffix(".lora_A.weight") for k in adapter if k.endswith(".lora_A.weight")]
    assert targets and all(t.rsplit(".", 1)[-1] in lora["target_modules"] for t in targets)
    for t in targets:
        delta = scale * (adapter[f"{t}.lora_B.weight"] @ adapter[f"{t}.lora_A.weight"]).T
        assert delta.abs().max() > 0, t  # trained: B starts at zero
        assert torch.allclose(merged[f"{t}.weight"], plain[f"{t}.weight"] + delta, atol=1e-7, rtol=0), t
    untouched = [k for k in plain if k in merged and k.removesuffix(".weight") not in targets]
    assert untouched and all(torch.equal(merged[k], plain[k]) for k in untouched)
    assert torch.equal(merged["score.weight"], adapter["score.weight"])  # the trained head (modules_to_save)


@pytest.mark.slow
def test_rte_lora_end_to_end(clf_repo):
    run_recipe(clf_repo, "rte")
    root = clf_repo.path
    tokens = datasets.load_from_disk(root / "data/tokens")["train"]
    raw = datasets.load_from_disk(root / "data/raw")["train"]
    assert set(raw.column_names) == {"sentence1", "sentence2", "label", "idx"}
    ids = list(tokens[0]["input_ids"])
    assert ids.count(EOS) == 1 and ids[-1] != EOS  # pair joined by eos; the last token is sentence2's
    chunks = datasets.load_from_disk(root / "data/chunks")["train"].with_format("numpy")
    assert chunks[0]["attention_mask"][ids.index(EOS)] == 1  # the separator is attended
    ev = check_classifier(clf_repo, "rte")
    train = read(clf_repo, "metrics/train.json")
    total = sum(t.numel() for t in load_file(root / "models/base/model.safetensors").values())
    assert 0 < train["trainable_parameters"] < total / 5  # adapters + head only
    # final = the adapter (with the trained head); export = merged plain weights + the adapter kept
    assert (root / "models/final/adapter_config.json").is_file()
    # a path inside the project, not this clone's absolute folder: models/final is the same bytes anywhere
    assert json.loads((root / "models/final/adapter_config.json").read_text())["base_model_name_or_path"] == "models/base"
    assert (root / "models/export/adapter/adapter_model.safetensors").is_file()
    adapter_keys = load_file(root / "models/export/adapter/adapter_model.safetensors").keys()
    assert any("lora_A" in k for k in adapter_keys) and any("score" in k for k in adapter_keys)
    merged = load_file(root / "models/export/model.safetensors")
    assert not any("lora" in k for k in merged) and "score.weight" in merged
    check_lora_export(root, clf_repo.params["lora"])
    # nothing in the adapter's outputs names the folder the run was in: the same run elsewhere gives the same bytes
    for out in ("models/final", "models/export"):
        texts = [f for f in (root / out).rglob("*") if f.suffix in (".json", ".md", ".txt")]
        assert texts and not [f for f in texts if str(root) in f.read_text(encoding="utf-8")], out
    # a reloaded export gives the same eval numbers, with transformers alone and via the adapter
    code = f"""
import json, datasets, transformers
from peft import PeftModel
from lmtune import params, tasks
from lmtune.models import loading
clf = tasks.load(params.load())  # the rte run's params: its label names
val = datasets.load_from_disk('data/chunks')['validation'].with_format('torch')
m = transformers.AutoModelForSequenceClassification.from_pretrained('models/export', use_safetensors=True)
a = clf.evaluate(m, val, tokenizer=None)
b = loading.load_model('models/base', clf.head, 42, **clf.model_kwargs())
b = PeftModel.from_pretrained(b, 'models/export/adapter')
c = clf.evaluate(b, val, tokenizer=None)
print(json.dumps([a, c]))
"""
    a, c = json.loads(clf_repo.run(sys.executable, "-c", code).stdout.splitlines()[-1])
    for r in (a, c):
        assert r["accuracy"] == ev["tuned"]["accuracy"] and r["macro_f1"] == ev["tuned"]["macro_f1"]
        assert list(r["predicted_counts"].values()) == list(ev["tuned"]["predicted_counts"].values())
    card = (root / "models/export/README.md").read_text()
    assert "LoRA" in card and "macro-F1" in card and "not_entailment" in card


@pytest.mark.slow
def test_emotion_end_to_end(clf_repo):
    run_recipe(clf_repo, "emotion")  # after rte in the same workspace: must not inherit its LoRA
    root = clf_repo.path
    assert clf_repo.params["lora"]["enabled"] is False and clf_repo.params["classification"]["text_pair_field"] is None
    assert not (root / "models/final/adapter_config.json").exists() and not (root / "models/export/adapter").exists()
    ev = check_classifier(clf_repo, "emotion")
    train = read(clf_repo, "metrics/train.json")
    total = sum(t.numel() for t in load_file(root / "models/final/model.safetensors").values())
    assert train["trainable_parameters"] == total  # full fine-tuning
    # the base row is the untrained (seeded) head: evaluating base again reproduces it exactly
    code = f"""
import json, datasets
from lmtune import params, tasks
from lmtune.models import loading
clf = tasks.load(params.load())  # the emotion run's params: its label names
val = datasets.load_from_disk('data/chunks')['validation'].with_format('torch')
base = loading.load_model('models/base', clf.head, 42, **clf.model_kwargs())
print(json.dumps(clf.evaluate(base, val, tokenizer=None)))
"""
    again = json.loads(clf_repo.run(sys.executable, "-c", code).stdout.splitlines()[-1])
    assert again["accuracy"] == ev["base"]["accuracy"] and again["predicted_counts"] == ev["base"]["predicted_counts"]
    assert {"rte", "emotion"} <= shown_experiments(clf_repo)
