"""Cheap experiments on the tiny pipeline: the base model is evaluated once (its own cached stage), a
`train.*` experiment adds about one weights file to disk, and an identical run is restored from DVC's
run-cache instead of training again (checkpoints are scratch, not a `persist` output)."""
import json
import re

import pytest

from bench.experiment import disk_bytes  # each inode once: a hardlinked output and its cache file are one copy
from repo_tools import copy_repo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exp_repo(tiny_repro, tmp_path_factory):
    repo = copy_repo(tiny_repro, tmp_path_factory.mktemp("exp") / "repo")
    repo.original_eval = json.loads((repo.path / "metrics/eval.json").read_text())
    return repo


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", out))


def test_train_experiment_skips_the_base_and_adds_about_one_weights_file(exp_repo):
    repo = exp_repo
    weights = (repo.path / "models/final/model.safetensors").stat().st_size
    base_before = json.loads((repo.path / "metrics/eval.json").read_text())["base"]
    harness_before = json.loads((repo.path / "metrics/harness.json").read_text())
    blocks_base = (repo.path / "metrics/blocks_base.csv").read_bytes()
    before = disk_bytes(repo.path)
    out = repo.dvc("exp", "run", "-S", "train.learning_rate=5e-4").stdout
    assert ran(out) == {"train", "evaluate", "export", "harness"}, out  # the tuned side only
    for stage in ("download", "flatten", "tokenize", "chunk", "evaluate_base", "base_samples", "harness_data", "harness_base"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    shown = repo.dvc("exp", "show", "--json").stdout
    assert "0.0005" in shown or "5e-4" in shown or "5e-04" in shown
    ev = json.loads((repo.path / "metrics/eval.json").read_text())
    assert ev["base"] == base_before and ev["tuned"] != base_before  # base numbers carried over unchanged
    assert (repo.path / "metrics/blocks_base.csv").read_bytes() == blocks_base
    assert json.loads((repo.path / "metrics/harness.json").read_text())["base"] == harness_before["base"]
    growth = disk_bytes(repo.path) - before
    # Target (issue 11): DVC cache + workspace growth per train.* experiment <= 1.2x the weights file.
    # It was 2.9x when checkpoints were a cached output and each output had its own copy.
    assert growth <= 1.2 * weights, (growth, weights)


def test_identical_experiment_is_restored_from_the_run_cache(exp_repo):
    """The committed params (lr 1e-3) were trained by the fixture's `dvc repro`: running them again as an
    experiment checks the outputs out of the run-cache instead of training."""
    repo = exp_repo
    out = repo.dvc("exp", "run", "-S", "train.learning_rate=1e-3").stdout
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out, out
    assert "train" not in ran(out) and "evaluate_base" not in ran(out), out
    again = json.loads((repo.path / "metrics/eval.json").read_text())
    assert again == repo.original_eval  # the same numbers as the original run, bit for bit


def test_base_evaluation_reruns_when_its_inputs_change(exp_repo):
    """`dvc status` stays honest: the evaluate params or the data rerun the base evaluation (dry run)."""
    repo = exp_repo
    repo.run("git", "checkout", "--", "params.yaml")
    repo.set_params({"evaluate": {"batch_size": 4}})
    assert {"evaluate_base", "evaluate"} <= ran(repo.dvc("repro", "--dry").stdout)
    repo.run("git", "checkout", "--", "params.yaml")
    repo.set_params({"chunk": {"max_validation_blocks": 3}})
    repo.dvc("repro", "chunk")  # new validation blocks (a dry run cannot know the new data hash)
    assert {"evaluate_base", "evaluate"} <= ran(repo.dvc("repro", "--dry").stdout)
    repo.run("git", "checkout", "--", "params.yaml")
    repo.dvc("repro", "chunk")  # back to the committed blocks (restored from the run-cache)
    assert "evaluate_base" not in ran(repo.dvc("repro", "--dry").stdout)
