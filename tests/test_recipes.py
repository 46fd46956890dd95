"""The seed recipes: each validates against the schema, and each runs end to end offline through its
documented command (`python -m lmtune.cli.recipe NAME`, i.e. `dvc exp run -n NAME -S ...`) on a fixture
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
import yaml

from conftest import ROOT, make_repo
from lmtune.cli import recipe
from lmtune.errors import UserError

RECIPES = ["eli5", "textfiles", "wikitext2", "wikitext103", "dolly", "emotion", "rte", "smoltalk", "tiny"]
FIX = "tests/fixtures"
EOS = 50256

TINY_RUN = ["model.source=gpt2_config", "model.name=null", "train.max_steps=2", "train.save_steps=2",
            "train.logging_steps=1", "train.learning_rate=0.001", "generate.max_new_tokens=4"]
DATA = {
    "eli5": ["data.source=files", f"data.train_file={FIX}/eli5_category/train.parquet", "data.validation_file=null"],
    "textfiles": [f"data.train_file={FIX}/textfiles/train.txt", f"data.validation_file={FIX}/textfiles/valid.txt"],
    "wikitext2": ["data.source=files", f"data.train_file={FIX}/wikitext/train.parquet", f"data.validation_file={FIX}/wikitext/validation.parquet"],
    "wikitext103": ["data.source=files", f"data.train_file={FIX}/wikitext/train.parquet", f"data.validation_file={FIX}/wikitext/validation.parquet"],
    "dolly": ["data.source=files", f"data.train_file={FIX}/dolly/train.jsonl", "data.validation_file=null"],
    "emotion": ["data.source=files", f"data.train_file={FIX}/emotion/train.jsonl", f"data.validation_file={FIX}/emotion/validation.jsonl"],
    "rte": ["data.source=files", f"data.train_file={FIX}/rte/train.jsonl", f"data.validation_file={FIX}/rte/validation.jsonl"],
    "smoltalk": ["data.source=files", f"data.train_file={FIX}/smoltalk/train.parquet", f"data.validation_file={FIX}/smoltalk/test.parquet"],
}
# Only where the tiny CPU model cannot take the recipe's value.
SIZE = {
    "textfiles": ["chunk.block_size=128", "train.precision=auto", "train.batch_size=2", "train.max_steps=3",
                  "train.eval_steps=1", "train.save_steps=1", "train.early_stopping_patience=1"],
    "wikitext103": ["chunk.block_size=128", "tokenize.num_proc=2", "train.dataloader_workers=0", "train.batch_size=2"],
    "dolly": ["chunk.block_size=128"],
    "rte": ["chunk.block_size=128", "train.batch_size=8"],
}
# smoltalk runs with its own base model, SmolLM2 (tests/test_recipe_chat.py).


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
    assert m["eli5"].causal_lm["text_fields"] == ["answers.text"] and m["eli5"].chunk.block_size == 128
    assert (m["eli5"].data.holdout, m["eli5"].data.holdout_size, m["eli5"].train.epochs) == ("random", 0.2, 3)
    assert (m["eli5"].train.learning_rate, m["eli5"].train.weight_decay) == (2e-5, 0.01)
    t = m["textfiles"]
    assert (t.chunk.mode, t.chunk.block_size, t.train.batch_size, t.train.gradient_accumulation_steps) == ("pad", 512, 4, 8)
    assert t.train.precision == "fp16" and t.train.gradient_checkpointing and t.train.early_stopping_patience > 0
    assert (m["wikitext2"].data.name, m["wikitext2"].data.config, m["wikitext2"].model.name) == ("Salesforce/wikitext", "wikitext-2-raw-v1", "distilbert/distilgpt2")
    assert (m["wikitext103"].data.config, m["wikitext103"].model.name) == ("wikitext-103-raw-v1", "openai-community/gpt2")
    assert (m["dolly"].task, m["dolly"].data.name) == ("instruction", "databricks/databricks-dolly-15k")
    e = m["emotion"]
    assert (e.task, e.data.name, len(e.classification["label_names"]), e.lora.enabled) == ("classification", "dair-ai/emotion", 6, False)
    r = m["rte"]
    assert (r.data.name, r.data.config, r.classification["text_pair_field"], len(r.classification["label_names"])) == ("nyu-mll/glue", "rte", "sentence2", 2)
    assert r.lora.enabled and r.lora.target_modules == ["c_attn"] and r.lora.modules_to_save == ["score"]
    c = m["smoltalk"]
    assert (c.task, c.model.name, c.model.chat_template) == ("chat", "HuggingFaceTB/SmolLM2-135M-Instruct", None)
    assert (c.data.name, c.data.config, c.chat["messages_field"], c.chunk.mode) == ("HuggingFaceTB/smoltalk", "everyday-conversations", "messages", "pack")


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
    assert "data.train_split='train[:5000]'" in sets and "causal_lm.text_fields=[answers.text]" in sets
    assert "causal_lm.joiner=' '" in sets and "model.name=distilbert/distilgpt2" in sets
    assert "train.learning_rate=0.1" in sets and "train.learning_rate=2e-05" not in sets  # extras replace


def test_command_resets_what_a_previous_experiment_left_in_the_workspace():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    after_rte = recipe.deep_update(base, recipe.load("rte"))
    sets = recipe.command("emotion", base=base, workspace=after_rte)
    assert "lora.enabled=false" in sets and "lora.modules_to_save=[]" in sets


def test_recipes_readme_documents_every_recipe():
    text = (ROOT / "recipes" / "README.md").read_text()
    for name in RECIPES:
        assert f"make recipe NAME={name}" in text and f"python -m lmtune.cli.recipe {name}" in text
    assert "49.6" in text  # the published ELI5 perplexity to compare against


# ---- slow: each recipe end to end ---------------------------------------------------------------

def run_recipe(repo, name):
    extra = TINY_RUN + DATA[name] + SIZE.get(name, [])
    args = [a for kv in extra for a in ("-S", kv)]
    out = repo.run(sys.executable, "-m", "lmtune.cli.recipe", name, *args).stdout
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
    assert params["data"]["train_split"] == "train[:5000]" and params["causal_lm"]["joiner"] == " "
    assert params["causal_lm"]["text_fields"] == ["answers.text"] and params["model"]["name"] is None
    raw = datasets.load_from_disk(lm_repo.path / "data/raw")
    # 40 fixture rows, a random 80/20 document holdout
    assert (len(raw["train"]), len(raw["validation"])) == (32, 8)
    assert raw["train"].features["answers"]["text"].feature.dtype == "string"
    flat = datasets.load_from_disk(lm_repo.path / "data/flat")
    row = raw["train"][0]
    assert flat["train"][0]["text"] == " ".join(row["answers"]["text"])
    chunks = datasets.load_from_disk(lm_repo.path / "data/chunks")
    assert chunks["train"].column_names == ["input_ids", "doc", "pos"] and len(chunks["train"][0]["input_ids"]) == 128
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


# The dolly, rte and emotion recipes end to end: tests/test_recipes_tasks.py.
