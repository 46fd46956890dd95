"""Code dependencies follow the data, seen through `dvc status` on the tiny pipeline (causal_lm): an edit
to a function reruns exactly the stages that run it. `dvc status` names the stages whose own deps changed
(the stages after them follow through their data deps when `dvc repro` runs)."""
import json

import pytest

from repo_tools import copy_repo

pytestmark = pytest.mark.slow

STAGES = {"download", "flatten", "tokenize", "chunk", "train", "evaluate_base", "evaluate", "base_samples", "export",
          "harness_data", "harness_base", "harness"}
# (file, text in one of its functions, its replacement) -> the stages whose deps change
EDITS = {
    "a sentence of the model card": (
        "lmtune/report/card.py", '"## Use"', '"## How to use"', {"export"}),
    "how samples are shown": (
        "lmtune/report/samples.py", 'return f"**{label}** ({probs[label]:.3f})"',
        'return f"**{label}** ({probs[label]:.4f})"', {"export"}),
    "another task's module": (
        "lmtune/tasks/classification.py", '"Macro F1"', '"Macro-averaged F1"', set()),
    "a function on the train path": (
        "lmtune/models/lora.py", "# GPT-2's Conv1D stores weights transposed", "# Conv1D: weights transposed",
        {"train", "evaluate_base", "evaluate", "export"}),
    "the trainer": (
        "lmtune/train/trainer.py", "causal LM labels are the input ids (the model shifts them)",
        "labels default to the input ids", {"train"}),
    "the task module the pipeline runs": (
        "lmtune/tasks/causal_lm.py", 'token_metrics("text")', 'token_metrics("document")',
        STAGES - {"download"}),
}


@pytest.fixture(scope="module")
def repo(tiny_repro, tmp_path_factory):
    return copy_repo(tiny_repro, tmp_path_factory.mktemp("code_deps") / "repo")


def changed(repo) -> set[str]:
    return set(json.loads(repo.dvc("status", "--json").stdout))


@pytest.mark.parametrize("edit", EDITS)
def test_an_edit_reruns_the_stages_that_run_the_code(repo, edit):
    rel, old, new, expected = EDITS[edit]
    path = repo.path / rel
    text = path.read_text()
    assert text.count(old) == 1, (rel, old)  # the edit lands in the function it names
    assert changed(repo) == set()  # up to date before the edit (and so after the previous test's restore)
    path.write_text(text.replace(old, new))
    try:
        assert changed(repo) == expected
    finally:
        path.write_text(text)


# (section, key, value) in params.yaml -> the stages whose params change
PARAM_EDITS = {
    "another task's own params": ("chat", "role_key", "from", set()),
    "the running task's own params": ("causal_lm", "joiner", " ", {"flatten", "train", "evaluate_base", "evaluate",
                                                                   "base_samples", "export"}),
}


@pytest.mark.parametrize("edit", PARAM_EDITS)
def test_a_params_edit_reruns_the_stages_that_read_it(repo, edit):
    import yaml

    section, key, value, expected = PARAM_EDITS[edit]
    path = repo.path / "params.yaml"
    text = path.read_text()
    raw = yaml.safe_load(text)
    assert changed(repo) == set()
    raw[section][key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        assert changed(repo) == expected
    finally:
        path.write_text(text)
