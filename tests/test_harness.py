"""lm-evaluation-harness pieces that need no model: params, the shipped tasks, the summary of the harness's
result dict, base/tuned side by side, and the rows compare shows (lmtune.report.harness)."""
import copy

import pytest
import yaml

from conftest import ROOT
from lmtune import params, paths, tasks
from lmtune.errors import UserError
from lmtune.eval import harness
from lmtune.report import harness as harness_report

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_harness(**kw) -> dict:
    raw = copy.deepcopy(BASE)
    raw["harness"].update(kw)
    return raw


def test_hub_task_names_validate_without_the_hub():
    p = params.validate(with_harness(tasks=["hellaswag", "arc_easy", "lambada_openai", "mmlu"], limit=None))
    assert p.harness.tasks == ["hellaswag", "arc_easy", "lambada_openai", "mmlu"]
    assert params.validate(with_harness(tasks=[])).harness.tasks == []


def test_bad_harness_params_are_all_named():
    with pytest.raises(UserError) as e:
        params.validate(with_harness(tasks=["hella swag"], limit=0, batch_size=0, max_length=1, extra=1))
    msg = str(e.value)
    for key in ("harness.tasks.0", "harness.limit", "harness.batch_size", "harness.max_length", "harness.extra"):
        assert key in msg, (key, msg)


def test_duplicate_tasks_and_a_window_longer_than_a_gpt2_context_are_refused():
    with pytest.raises(UserError, match="harness.tasks has duplicates"):
        params.validate(with_harness(tasks=["lmtune_heldout", "lmtune_heldout"]))
    raw = with_harness(max_length=129)
    raw["model"].update(source="gpt2_config")
    raw["model"]["gpt2"]["n_positions"] = 128
    with pytest.raises(UserError, match=r"harness.max_length: 129 is longer than the model's context"):
        params.validate(raw)
    raw["harness"]["max_length"] = 128
    params.validate(raw)


def test_shipped_tasks_read_the_files_the_pipeline_writes():
    local = harness.local_tasks()
    assert set(local) == {"lmtune_heldout", "lmtune_sotu_oldest"}
    assert set(BASE["harness"]["tasks"]) <= set(local)  # the default runs offline
    written = {"heldout.jsonl", "sotu_oldest.jsonl"}  # harness.write_documents
    for name, f in local.items():
        cfg = yaml.safe_load(f.read_text())
        assert cfg["output_type"] == "loglikelihood_rolling" and cfg["dataset_path"] == "json"
        files = harness.data_files(f)
        assert len(files) == 1 and (ROOT / files[0]).parent == paths.HARNESS_DATA and files[0].rsplit("/", 1)[1] in written


def test_only_language_models_are_scored():
    hp = params.validate(BASE).harness
    assert harness.skip_reason(tasks.get("causal_lm"), hp) is None
    assert harness.skip_reason(tasks.get("instruction"), hp) is None
    assert "classifier" in harness.skip_reason(tasks.get("classification"), hp)
    assert harness.skip_reason(tasks.get("causal_lm"), params.validate(with_harness(tasks=[])).harness) == \
        "harness.tasks is empty"


def test_document_text_per_task():
    assert tasks.get("causal_lm").document_text({"text": "a b"}) == "a b"
    assert tasks.get("instruction").document_text({"prompt": "### Q\n", "response": "yes"}) == "### Q\nyes"
    assert tasks.get("classification").document_text({"text": "a", "label": 0}) is None


# A trimmed result dict as lm_eval.simple_evaluate 0.4.13 returns it (keys "<metric>,<filter>").
RESULTS = {
    "results": {
        "lmtune_heldout": {"alias": "lmtune_heldout", "name": "lmtune_heldout", "sample_len": 2,
                           "bits_per_byte,none": 1.25, "bits_per_byte_stderr,none": "N/A",
                           "word_perplexity,none": 80.5, "word_perplexity_stderr,none": "N/A"},
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.05,
                     "acc_norm,none": 0.45, "acc_norm_stderr,none": 0.04, "exact_match,strict": 0.1,
                     "exact_match_stderr,strict": 0.01},
    },
    "n-samples": {"lmtune_heldout": {"original": 20, "effective": 2}, "arc_easy": {"original": 100, "effective": 100}},
    "versions": {"lmtune_heldout": 1.0, "arc_easy": 1.0},
}


def test_summary_keeps_every_metric_with_the_harness_stderr():
    s = harness.summary(RESULTS)
    assert s["lmtune_heldout"] == {
        "metrics": {"bits_per_byte": {"value": 1.25, "stderr": None}, "word_perplexity": {"value": 80.5, "stderr": None}},
        "n_samples": 2, "n_documents": 20, "version": 1.0}
    assert s["arc_easy"]["metrics"] == {"acc": {"value": 0.5, "stderr": 0.05}, "acc_norm": {"value": 0.45, "stderr": 0.04},
                                        "exact_match,strict": {"value": 0.1, "stderr": 0.01}}


def record(which: str, **over) -> dict:
    rec = {"lm_eval_version": "0.4.13", "bootstrap_iters": 1000,
           "settings": {"tasks": ["lmtune_heldout"], "limit": 2, "batch_size": 8, "max_length": 64},
           which: harness.summary(RESULTS)}
    rec.update(over)
    return rec


def test_side_by_side_needs_the_same_settings():
    both = harness.side_by_side(record("base"), record("tuned"))
    assert both["base"] == both["tuned"] == harness.summary(RESULTS) and both["lm_eval_version"] == "0.4.13"
    stale = record("base", settings={**record("base")["settings"], "limit": 3})
    with pytest.raises(UserError, match="harness_base.json was measured with other settings.*dvc repro harness_base"):
        harness.side_by_side(stale, record("tuned"))
    with pytest.raises(UserError, match="lm_eval_version"):
        harness.side_by_side(record("base", lm_eval_version="0.4.12"), record("tuned"))


def test_lines_show_values_and_stderr():
    out = harness.lines(record("tuned"), "tuned")
    assert "harness tuned lmtune_heldout (2 of 20): bits_per_byte 1.25, word_perplexity 80.5" in out
    assert "harness tuned arc_easy (100 of 100): acc 0.5 ± 0.05, acc_norm 0.45 ± 0.04, exact_match,strict 0.1 ± 0.01" in out
    assert harness.lines({"skipped": "harness.tasks is empty", "tuned": {}}, "tuned") == [
        "harness tuned: skipped (harness.tasks is empty)"]


def test_compare_rows_show_base_and_tuned_with_stderr():
    base, tuned = harness.summary(RESULTS), copy.deepcopy(harness.summary(RESULTS))
    tuned["lmtune_heldout"]["metrics"]["bits_per_byte"]["value"] = 1.0
    tuned["arc_easy"]["metrics"]["acc_norm"] = {"value": 0.54, "stderr": 0.03}
    h = {**record("tuned"), "tuned": tuned, "base": base}
    header, rows, notes = harness_report.table([("exp-a", h), ("old", None),
                                                ("clf", {"skipped": "task classification: ...", "tuned": {}})])
    assert header == ["run", "harness task", "metric", "base", "tuned", "change"]
    assert rows == [["exp-a", "arc_easy", "acc_norm", "0.45 ± 0.04", "0.54 ± 0.03", "+20.0%"],
                    ["exp-a", "lmtune_heldout", "bits_per_byte", "1.25", "1", "-20.0%"]]
    assert "harness: clf: skipped (task classification: ...)" in notes
    assert "harness: no metrics/harness.json for old" in notes
    assert any(n.startswith("harness: lm-eval 0.4.13, settings {") for n in notes)
    assert any(n.startswith("harness: no stderr for bits_per_byte") for n in notes)


def test_a_window_longer_than_the_model_context_is_one_line_naming_the_key():
    harness.check_max_length(128, 128)
    with pytest.raises(UserError, match=r"^harness.max_length: 256 is longer than the model's context \(128 positions\)"):
        harness.check_max_length(256, 128)


def test_a_classifier_or_no_tasks_gives_a_note_and_no_run(tmp_path):
    p = params.validate(BASE)
    rec, samples = harness.measure(tmp_path / "no-model-here", p, tasks.get("classification"), "tuned")
    assert rec == {"settings": {"tasks": list(p.harness.tasks)}, "tuned": {},
                   "skipped": "task classification: the model is a sequence classifier, and lm-eval's HFLM scores "
                              "causal language models"} and samples == ""
    about = harness.write_documents(tasks.get("causal_lm"), params.validate(with_harness(tasks=[])).harness, tmp_path / "h")
    assert about == {"skipped": "harness.tasks is empty"} and sorted(p.name for p in (tmp_path / "h").iterdir()) == ["about.json"]
