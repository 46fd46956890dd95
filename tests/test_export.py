"""The export of the tiny pipeline: a hub-ready card (read back with huggingface_hub's own API), base and
tuned samples side by side for the same prompts, settings and seed, a config with only the differences
training should make, the weights as trained, and the README's `pipeline()` snippet working on it."""
import json
import re
import subprocess
import sys

import pytest
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from conftest import ROOT
from repo_tools import copy_repo, tree_hashes
from lmtune import params, tasks
from lmtune.report import card
from lmtune.eval import generation
from lmtune.device import Placement
from lmtune.report.samples import md_cell

pytestmark = pytest.mark.slow

# config.json keys fine-tuning may change per task, against the base model's config (nothing for a
# language model: same architecture, same inference settings; a classifier gains its head and labels).
TRAINING_MAY_CHANGE = {"causal_lm": set(), "instruction": set(),
                       "classification": {"architectures", "id2label", "label2id", "problem_type"}}


def read(repo, rel):
    return json.loads((repo.path / rel).read_text())


def test_card_metadata_reads_back_with_the_hub_api(tiny_repro):
    root = tiny_repro.path
    p = params.load(root / "params.yaml")
    task = tasks.load(p)
    card = ModelCard.load(root / "models/export/README.md")
    data = card.data
    tuned = read(tiny_repro, "metrics/eval.json")["tuned"]
    assert data.pipeline_tag == task.head.pipeline_tag == "text-generation"
    assert data.library_name == "transformers"
    assert data.base_model is None  # a random-init GPT-2 has no hub base model
    assert data.license == "mit" and data.language is None and data.datasets is None  # local fixture files
    assert data.tags == ["lmtune", "dvc", "causal_lm"]
    assert data.model_name == "gpt2-from-config-lmtune-causal_lm"
    results = data.eval_results
    assert [(r.metric_type, r.metric_value) for r in results] == [
        ("perplexity", round(tuned["perplexity"], 4)), ("accuracy", round(tuned["accuracy"], 4))]
    for r in results:
        assert r.task_type == "text-generation" and r.task_name == task.title
        assert r.dataset_type == "local-files" and r.dataset_split == "validation (tests/fixtures/sotu_small/valid.txt)"
        assert r.dataset_name.startswith("local files tests/fixtures/sotu_small/train.txt")
    # provenance in the body: every upstream output hash dvc.lock recorded, and the params
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for stage, entry in lock.items():
        for out in entry.get("outs", []) if stage not in ("export", "harness_data", "harness_base", "harness") else []:
            line = f"- `{out['path']}` md5 (dvc.lock, stage `{stage}`): `{out['md5']}`"
            # The wall-clock timing file's hash changes with every run: it stays out of the exported bytes.
            assert (line not in card.text) if out["path"] == "metrics/train_timing.json" else (line in card.text), line
    # the params, without the harness (measured afterwards) and without the sections of the tasks not run
    others = set(params.TASKS) - {p.task}
    assert yaml.safe_dump(p.model_dump(exclude={"harness", *others}), sort_keys=False).rstrip() in card.text
    assert not any(f"\n{name}:" in card.text for name in others)
    assert "harness" not in card.text  # measured after the export, from its own stages


def test_export_is_byte_identical_from_another_run_in_another_folder(tiny_repro, tmp_path):
    """Train and export again in a copy elsewhere: metrics/train_timing.json (wall clock) and its dvc.lock hash
    change, models/export does not, byte for byte (a teammate can check a published model against the lock)."""
    other = copy_repo(tiny_repro, tmp_path / "elsewhere")
    other.dvc("repro", "--force", "--single-item", "train")
    other.dvc("repro", "--force", "--single-item", "export")

    def timing_md5(repo):
        outs = yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"]["train"]["outs"]
        return next(o["md5"] for o in outs if o["path"] == "metrics/train_timing.json")

    assert timing_md5(other) != timing_md5(tiny_repro)  # the second run's clock differs
    export = tree_hashes(tiny_repro.path, tops=("models/export",))
    assert export and tree_hashes(other.path, tops=("models/export",)) == export


@pytest.mark.parametrize("name,source,model_name,data_name,license_,language,base", [
    ("smollm2", "smollm2", None, None, "apache-2.0", ["en"], "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("hub", "hub", "distilbert/distilgpt2", "Salesforce/wikitext", "apache-2.0", ["en"], "distilbert/distilgpt2"),
    ("other", "hub", "someone/model", "someone/data", "unknown", None, "someone/model"),
])
def test_card_data_per_source(name, source, model_name, data_name, license_, language, base):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(source=source, name=model_name)
    if data_name:
        raw["data"].update(source="hub", name=data_name, config="c1", validation_split="validation")
    p = params.validate(raw)
    tuned = {"perplexity": 12.3456789, "accuracy": 0.5}
    data = ModelCard(f"---\n{card.card_data(tasks.load(p), tuned).to_yaml()}\n---\n").data  # round trip through YAML
    assert (data.base_model, data.license, data.language) == (base, license_, language)
    assert data.datasets == ([data_name] if data_name else None)
    r = data.eval_results[0]
    assert (r.metric_type, r.metric_value) == ("perplexity", 12.3457)
    if data_name:
        assert (r.dataset_type, r.dataset_config, r.dataset_split) == (data_name, "c1", "validation")
    else:
        assert r.dataset_split == "validation: the last 4 documents held out from train"


def test_samples_are_base_and_tuned_for_the_same_prompts_settings_and_seed(tiny_repro):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tiny_repro.path
    p = params.load(root / "params.yaml")
    samples = read(tiny_repro, "models/export/samples.json")
    strategies = generation.strategies(p.generate)
    assert [(s["prompt"], s["strategy"]) for s in samples] == [(q, k) for q in p.generate.prompts for k in strategies]
    cpu = Placement("cpu", None)
    tok = AutoTokenizer.from_pretrained(root / "models/export")
    models = {key: generation.place(AutoModelForCausalLM.from_pretrained(root / folder), cpu)
              for key, folder in (("base_text", "models/base"), ("text", "models/export"))}
    for s in samples:
        assert s["settings"] == {**strategies[s["strategy"]], "max_new_tokens": p.generate.max_new_tokens,
                                 "seed": p.generate.seed}
        for key, model in models.items():  # regenerate each side with the recorded settings and seed
            again = generation.generate(model, tok, s["prompt"], p.generate.max_new_tokens, p.generate.seed, cpu,
                                        **strategies[s["strategy"]])
            assert again == s[key], (s["strategy"], key)
    assert any(s["text"] != s["base_text"] for s in samples)  # training changed something
    card = (root / "models/export/README.md").read_text()
    for s in samples:  # one card row per sample: strategy, settings, base, tuned
        assert f" | {md_cell(s['base_text'])} | {md_cell(s['text'])} |" in card, s


def test_exported_config_differs_from_the_base_only_where_training_should(tiny_repro):
    root = tiny_repro.path
    base, exp = read(tiny_repro, "models/base/config.json"), read(tiny_repro, "models/export/config.json")
    final = read(tiny_repro, "models/final/config.json")
    assert final["use_cache"] is False  # what training leaves behind (why export must restore it)
    changed = {k for k in base.keys() | exp.keys() if base.get(k) != exp.get(k)}
    assert changed <= TRAINING_MAY_CHANGE[tiny_repro.params["task"]], changed
    assert exp["use_cache"] is True
    # the generation defaults it ships are the params' top-p strategy, and the card says so
    gen = read(tiny_repro, "models/export/generation_config.json")
    gp = params.load(root / "params.yaml").generate
    assert (gen["do_sample"], gen["top_p"], gen["top_k"], gen["max_new_tokens"]) == (True, gp.top_p, 0, gp.max_new_tokens)
    card = (root / "models/export/README.md").read_text()
    assert f"do_sample=True, top_p={gp.top_p}, top_k=0, max_new_tokens={gp.max_new_tokens}" in card


def test_export_weights_are_the_trained_weights(tiny_repro):
    root = tiny_repro.path
    final, exp = (root / "models/final/model.safetensors"), (root / "models/export/model.safetensors")
    assert final.read_bytes() == exp.read_bytes()
    assert load_file(exp).keys() == load_file(final).keys()


def test_readme_pipeline_snippet_runs_on_the_export(tiny_repro):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using the exported model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'pipeline("text-generation", model="models/export")' in code
    out = subprocess.run([sys.executable, "-c", code], cwd=tiny_repro.path, env=tiny_repro.env, text=True,
                         capture_output=True)
    assert out.returncode == 0, out.stderr[-3000:]
    # greedy decoding through pipeline() = lmtune's own greedy generation from the same export
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = re.search(r'generator\("([^"]+)"', code).group(1)
    n = int(re.search(r"max_new_tokens=(\d+)", code).group(1))
    cpu = Placement("cpu", None)
    model = generation.place(AutoModelForCausalLM.from_pretrained(tiny_repro.path / "models/export"), cpu)
    tok = AutoTokenizer.from_pretrained(tiny_repro.path / "models/export")
    assert out.stdout == prompt + generation.generate(model, tok, prompt, n, 0, cpu, do_sample=False) + "\n"


def test_base_samples_rerun_for_generate_settings_not_for_training(tiny_repro):
    repo = tiny_repro
    try:
        p = repo.params
        p["train"]["learning_rate"] = 2e-3
        repo.set_params(p)
        assert "base_samples" not in json.loads(repo.dvc("status", "--json").stdout)
        p["generate"]["top_k"] = 7
        repo.set_params(p)
        changed = set(json.loads(repo.dvc("status", "--json").stdout))
        assert {"base_samples", "export"} <= changed and "train" in changed
    finally:
        repo.run("git", "checkout", "--", "params.yaml")
