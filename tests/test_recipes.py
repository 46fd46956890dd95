"""The seed recipes: each validates against the schema, and each runs end to end offline through its
documented command (`python -m lmtune.recipe NAME`, i.e. `dvc exp run -n NAME -S ...`) on a fixture
in its hub dataset's real schema, with the tiny GPT-2 from config and GPT-2's real BPE.

The tiny runs add `-S` overrides after the recipe's: the model (tiny GPT-2 instead of the hub id),
the data (`data.source: files` -> the fixture, read by the same `load_dataset` path), 2-3 steps, and
where the recipe needs a GPU or a bigger context: precision auto instead of fp16 and block_size 128
(the tiny model's context). Everything else is the recipe's own setting. One repo per task runs its
recipes one after another, as a user would, which also checks that a recipe does not inherit the
previous experiment's params.
"""
import json
import sys

import datasets
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import ROOT, make_repo
from lmtune import recipe
from lmtune.errors import UserError

RECIPES = ["eli5", "textfiles", "wikitext2", "wikitext103", "dolly", "emotion", "rte"]
FIX = "tests/fixtures"
EOS = 50256

TINY_RUN = ["model.source=gpt2_config", "model.name=null", "train.max_steps=2", "train.save_steps=2",
            "train.logging_steps=1", "train.learning_rate=0.001", "generate.max_new_tokens=4"]
DATA = {
    "eli5": [f"data.source=files", f"data.train_file={FIX}/eli5_category/train.parquet", "data.validation_file=null"],
    "textfiles": [f"data.train_file={FIX}/textfiles/train.txt", f"data.validation_file={FIX}/textfiles/valid.txt"],
    "wikitext2": ["data.source=files", f"data.train_file={FIX}/wikitext/train.parquet", f"data.validation_file={FIX}/wikitext/validation.parquet"],
    "wikitext103": ["data.source=files", f"data.train_file={FIX}/wikitext/train.parquet", f"data.validation_file={FIX}/wikitext/validation.parquet"],
    "dolly": ["data.source=files", f"data.train_file={FIX}/dolly/train.jsonl", "data.validation_file=null"],
    "emotion": ["data.source=files", f"data.train_file={FIX}/emotion/train.jsonl", f"data.validation_file={FIX}/emotion/validation.jsonl"],
    "rte": ["data.source=files", f"data.train_file={FIX}/rte/train.jsonl", f"data.validation_file={FIX}/rte/validation.jsonl"],
}
# Only where the tiny CPU model cannot take the recipe's value.
SIZE = {
    "textfiles": ["chunk.block_size=128", "train.precision=auto", "train.batch_size=2", "train.max_steps=3",
                  "train.eval_steps=1", "train.save_steps=1", "train.early_stopping_patience=1"],
    "wikitext103": ["chunk.block_size=128", "tokenize.num_proc=2", "train.dataloader_workers=0", "train.batch_size=2"],
    "dolly": ["chunk.block_size=128"],
    "rte": ["chunk.block_size=128", "train.batch_size=8"],
}


# ---- fast: the recipe files and the runner ------------------------------------------------------

@pytest.mark.parametrize("name", RECIPES)
def test_recipe_validates_on_params_yaml(name):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = recipe.merged(name, base=base)
    assert p.model.source == "hub" or p.data.source == "files"
    overrides = recipe.load(name)
    assert overrides["task"] == p.task  # every recipe names its task


def test_recipe_set_matches_the_issue():
    assert recipe.known() == sorted(RECIPES)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    m = {n: recipe.merged(n, base=base) for n in RECIPES}
    assert (m["eli5"].model.name, m["eli5"].data.name, m["eli5"].data.train_split) == ("distilbert/distilgpt2", "rexarski/eli5_category", "train[:5000]")
    assert m["eli5"].data.revision == "refs/convert/parquet"  # the repo itself has only a loading script
    assert m["eli5"].flatten.text_fields == ["answers.text"] and m["eli5"].chunk.block_size == 128
    assert (m["eli5"].data.holdout, m["eli5"].data.holdout_size, m["eli5"].train.epochs) == ("random", 0.2, 3)
    assert (m["eli5"].train.learning_rate, m["eli5"].train.weight_decay) == (2e-5, 0.01)
    t = m["textfiles"]
    assert (t.chunk.mode, t.chunk.block_size, t.train.batch_size, t.train.gradient_accumulation_steps) == ("pad", 512, 4, 8)
    assert t.train.precision == "fp16" and t.train.gradient_checkpointing and t.train.early_stopping_patience > 0
    assert (m["wikitext2"].data.name, m["wikitext2"].data.config, m["wikitext2"].model.name) == ("Salesforce/wikitext", "wikitext-2-raw-v1", "distilbert/distilgpt2")
    assert (m["wikitext103"].data.config, m["wikitext103"].model.name) == ("wikitext-103-raw-v1", "openai-community/gpt2")
    assert (m["dolly"].task, m["dolly"].data.name) == ("instruction", "databricks/databricks-dolly-15k")
    e = m["emotion"]
    assert (e.task, e.data.name, len(e.flatten.label_names), e.lora.enabled) == ("classification", "dair-ai/emotion", 6, False)
    r = m["rte"]
    assert (r.data.name, r.data.config, r.flatten.text_pair_field, len(r.flatten.label_names)) == ("nyu-mll/glue", "rte", "sentence2", 2)
    assert r.lora.enabled and r.lora.target_modules == ["c_attn"] and r.lora.modules_to_save == ["score"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_hub_ids_are_namespaced(name):
    # huggingface_hub's own URI parser is what rejects `wikitext` under datasets 5 (huggingface/datasets#8612)
    from huggingface_hub import parse_hf_uri

    raw = recipe.load(name)
    for section, kind in (("model", "models"), ("data", "datasets")):
        sec = raw.get(section, {})
        if sec.get("source") == "hub":
            prefix = "" if kind == "models" else "datasets/"
            assert parse_hf_uri(f"hf://{prefix}{sec['name']}").id == sec["name"], (name, section)


def test_unknown_recipe_is_one_line_listing_known_ones():
    with pytest.raises(UserError) as e:
        recipe.load("nope")
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in RECIPES)


def test_command_is_dvc_exp_run_named_with_every_override():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    cmd = recipe.command("eli5", ["train.max_steps=2", "train.learning_rate=0.1"], ["-f"], base=base, workspace=base)
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "eli5"] and cmd[-1] == "-f"
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]
    assert "data.train_split='train[:5000]'" in sets and "flatten.text_fields=[answers.text]" in sets
    assert "flatten.joiner=' '" in sets and "model.name=distilbert/distilgpt2" in sets
    assert "train.learning_rate=0.1" in sets and "train.learning_rate=2e-05" not in sets  # extras replace


def test_command_resets_what_a_previous_experiment_left_in_the_workspace():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    after_rte = recipe.deep_update(base, recipe.load("rte"))
    sets = recipe.command("emotion", base=base, workspace=after_rte)
    assert "lora.enabled=false" in sets and "lora.modules_to_save=[]" in sets


def test_recipes_readme_documents_every_recipe():
    text = (ROOT / "recipes" / "README.md").read_text()
    for name in RECIPES:
        assert f"make recipe NAME={name}" in text and f"python -m lmtune.recipe {name}" in text
    assert "49.6" in text  # the published ELI5 perplexity to compare against


# ---- slow: each recipe end to end ---------------------------------------------------------------

def run_recipe(repo, name):
    extra = TINY_RUN + DATA[name] + SIZE.get(name, [])
    args = [a for kv in extra for a in ("-S", kv)]
    out = repo.run(sys.executable, "-m", "lmtune.recipe", name, *args).stdout
    params = repo.params
    assert params["task"] == recipe.load(name)["task"]
    return out, params


def read(repo, rel):
    return json.loads((repo.path / rel).read_text())


def shown_experiments(repo) -> set[str]:
    rows = json.loads(repo.dvc("exp", "show", "--json").stdout)
    return {e.get("name") for row in rows for e in (row.get("experiments") or [])
            for e in ([e] + (e.get("revs") or []))} - {None}


def check_lm_run(repo, name, expect_steps=2):
    root = repo.path
    train, ev = read(repo, "metrics/train.json"), read(repo, "metrics/eval.json")
    assert 1 <= train["steps"] <= expect_steps
    assert set(ev) == {"base", "tuned"} and ev["base"]["n_tokens"] == ev["tuned"]["n_tokens"] > 0
    # a random-init model starts near ln(50257) = 10.8 nats; 2 steps at lr 1e-3 must lower it
    assert ev["tuned"]["loss"] < ev["base"]["loss"]
    samples = json.loads((root / "models/export/samples.json").read_text())
    assert {s["strategy"] for s in samples} == {"greedy", "temperature", "top_k", "top_p"}
    assert all(isinstance(s["base_text"], str) for s in samples)  # the base model's output beside each
    prompts = recipe.load(name).get("generate", {}).get("prompts")
    if prompts:  # the recipe's own prompts
        assert {s["prompt"] for s in samples} == set(prompts)
    return train, ev


@pytest.fixture(scope="module")
def lm_repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("recipes_lm") / "repo")


@pytest.mark.slow
def test_eli5_end_to_end(lm_repo):
    out, params = run_recipe(lm_repo, "eli5")
    # values that need quoting reach params.yaml intact through `dvc exp run -S`
    assert params["data"]["train_split"] == "train[:5000]" and params["flatten"]["joiner"] == " "
    assert params["flatten"]["text_fields"] == ["answers.text"] and params["model"]["name"] is None
    raw = datasets.load_from_disk(lm_repo.path / "data/raw")
    # 40 fixture rows, a random 80/20 document holdout
    assert (len(raw["train"]), len(raw["validation"])) == (32, 8)
    assert raw["train"].features["answers"]["text"].feature.dtype == "string"
    flat = datasets.load_from_disk(lm_repo.path / "data/flat")
    row = raw["train"][0]
    assert flat["train"][0]["text"] == " ".join(row["answers"]["text"])
    chunks = datasets.load_from_disk(lm_repo.path / "data/chunks")
    assert chunks["train"].column_names == ["input_ids"] and len(chunks["train"][0]["input_ids"]) == 128
    check_lm_run(lm_repo, "eli5")


@pytest.mark.slow
def test_textfiles_end_to_end(lm_repo):
    run_recipe(lm_repo, "textfiles")
    chunks = datasets.load_from_disk(lm_repo.path / "data/chunks").with_format("numpy")
    ex = chunks["train"][:]
    lines = [l for l in (ROOT / FIX / "textfiles/train.txt").read_text().splitlines() if l.strip()]
    assert len(ex["input_ids"]) == len(lines)  # one padded/truncated example per line
    pad = ex["attention_mask"] == 0
    assert pad.any() and (ex["labels"][pad] == -100).all() and (ex["labels"][~pad] == ex["input_ids"][~pad]).all()
    train, ev = check_lm_run(lm_repo, "textfiles", expect_steps=3)
    assert (lm_repo.path / "metrics/train/plots/metrics/eval/loss.tsv").is_file()  # evaluated during training
    assert train["global_batch_size"] == 2 * 8  # gradient accumulation 8
    # only real tokens are scored: n_tokens = sum over examples of (length - 1)
    val = datasets.load_from_disk(lm_repo.path / "data/chunks")["validation"].with_format("numpy")[:]
    assert ev["tuned"]["n_tokens"] == int((val["labels"][:, 1:] != -100).sum())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wikitext2", "wikitext103"])
def test_wikitext_end_to_end(lm_repo, name):
    run_recipe(lm_repo, name)
    raw = datasets.load_from_disk(lm_repo.path / "data/raw")
    lines = list(raw["train"]["text"])
    assert "" in lines and any(t.startswith(" = ") for t in lines)
    flat = datasets.load_from_disk(lm_repo.path / "data/flat")
    texts = list(flat["train"]["text"])
    assert texts == [t for t in lines if t.strip()]  # empty lines dropped, text (and its "\n") kept
    tokens = datasets.load_from_disk(lm_repo.path / "data/tokens")
    assert tokens["train"].features["input_ids"].feature.dtype == "uint16"
    assert EOS not in np.concatenate(tokens["train"].with_format("numpy")["input_ids"])  # no separators
    check_lm_run(lm_repo, name)
    assert lm_repo.params["data"]["config"] == recipe.load(name)["data"]["config"]


@pytest.mark.slow
def test_lm_recipes_show_side_by_side(lm_repo):
    names = shown_experiments(lm_repo)
    assert {"eli5", "textfiles", "wikitext2", "wikitext103"} <= names, names


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
    out = repo.run(sys.executable, "-m", "lmtune.generate", "--prompt", "Name a color.", "--strategy", "greedy",
                   "--max-new-tokens", "3").stdout
    assert "### Instruction:\nName a color.\n\n### Response:\n" in out
    assert "dolly" in shown_experiments(repo)


@pytest.fixture(scope="module")
def clf_repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("recipes_clf") / "repo")


def check_classifier(repo, name):
    root = repo.path
    names = recipe.load(name)["flatten"]["label_names"]
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
    # a reloaded export gives the same eval numbers, with transformers alone and via the adapter
    code = f"""
import json, datasets, transformers
from peft import PeftModel
from lmtune import tasks
clf = tasks.get('classification')
names = {recipe.load('rte')['flatten']['label_names']!r}
val = datasets.load_from_disk('data/chunks')['validation'].with_format('torch')
m = transformers.AutoModelForSequenceClassification.from_pretrained('models/export', use_safetensors=True)
a = clf.evaluate(m, val, 4, names)
b = clf.load_model('models/base', 42, names)
b = PeftModel.from_pretrained(b, 'models/export/adapter')
c = clf.evaluate(b, val, 4, names)
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
    assert clf_repo.params["lora"]["enabled"] is False and clf_repo.params["flatten"]["text_pair_field"] is None
    assert not (root / "models/final/adapter_config.json").exists() and not (root / "models/export/adapter").exists()
    ev = check_classifier(clf_repo, "emotion")
    train = read(clf_repo, "metrics/train.json")
    total = sum(t.numel() for t in load_file(root / "models/final/model.safetensors").values())
    assert train["trainable_parameters"] == total  # full fine-tuning
    # the base row is the untrained (seeded) head: evaluating base again reproduces it exactly
    code = f"""
import json, datasets
from lmtune import tasks
clf = tasks.get('classification')
names = {recipe.load('emotion')['flatten']['label_names']!r}
val = datasets.load_from_disk('data/chunks')['validation'].with_format('torch')
print(json.dumps(clf.evaluate(clf.load_model('models/base', 42, names), val, 4, names)))
"""
    again = json.loads(clf_repo.run(sys.executable, "-c", code).stdout.splitlines()[-1])
    assert again["accuracy"] == ev["base"]["accuracy"] and again["predicted_counts"] == ev["base"]["predicted_counts"]
    assert {"rte", "emotion"} <= shown_experiments(clf_repo)
