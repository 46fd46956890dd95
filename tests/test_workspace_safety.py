"""What a failed run leaves behind (issue 25, items 2 and 6), on copies of the shared tiny `dvc repro`.

A refused `dvc exp run` (here `-S chunk.block_size=4096`, above the tiny model's 128 positions): DVC has
written 4096 into params.yaml and removed the chunk stage's outputs before the stage refused. DVC offers no
hook that runs before it removes them, so the stage's refusal ends with the exact command that restores
the last commit (lmtune.errors.dvc_restore_hint), and this test runs that command and checks everything is
back byte for byte. `dvc exp run --temp` runs in a copy under .dvc/tmp/exps and leaves the workspace as it was.

Training outside DVC in a git + DVC repo leaves no DVC experiment behind (dvclive's Live, the curves writer,
would save one under `refs/exps/` unless told `save_dvc_exp=False`): tests/test_trust.py's
test_same_params_and_seed_twice_give_byte_identical_metrics, which already trains there by hand, checks it.
"""
import re

import pytest

from conftest import repo_state
from repo_tools import copy_repo
from lmtune.errors import dvc_restore_hint

REFUSED = "chunk.block_size=4096"


def state(repo) -> dict:
    """The guard's repo state without DVC's executor bookkeeping (refs/exps/exec/*: every workspace
    `dvc exp run` leaves EXEC_HEAD, failed or not, and resets it on the next run)."""
    s = repo_state(repo)
    s["git refs"] = re.sub(r"^\S+ commit\trefs/exps/exec/\S+\n", "", s["git refs"], flags=re.M)
    return s


@pytest.fixture
def work(tiny_repro, tmp_path):
    repo = copy_repo(tiny_repro, tmp_path / "work")
    repo.commit("the reproduced tiny pipeline")  # a user's state before trying an experiment: all committed
    return repo


@pytest.mark.slow
def test_refused_experiment_prints_the_command_that_restores_the_workspace(work):
    before = state(work)
    proc = work.dvc("exp", "run", "-S", REFUSED, check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "chunk.block_size: 4096 is above the model's context length 128" in err, err[-3000:]
    # What DVC did before the refusal: the value is in params.yaml and the chunk stage's output is gone.
    assert work.params["chunk"]["block_size"] == 4096
    assert not (work.path / "data/chunks").exists()
    hint = next(line for line in err.splitlines() if line.startswith("note: `dvc exp run` wrote"))
    command = hint.split(": ", 2)[-1]
    assert command == "git checkout HEAD -- params.yaml dvc.lock metrics && dvc checkout", hint
    work.run("bash", "-c", command)
    assert state(work) == before
    assert "up to date" in work.dvc("status").stdout


@pytest.mark.slow
def test_temp_experiment_leaves_the_workspace_untouched(work):
    before = state(work)
    proc = work.dvc("exp", "run", "--temp", "-S", REFUSED, check=False)
    assert proc.returncode != 0 and "is above the model's context length" in proc.stdout + proc.stderr
    assert "note:" not in proc.stdout + proc.stderr  # nothing to restore
    after = state(work)
    assert {k: v for k, v in after.items() if k != "git refs"} == {k: v for k, v in before.items() if k != "git refs"}
    # --temp keeps even a failed run's commit as an experiment ref; nothing else moved.
    assert set(before["git refs"].splitlines()) <= set(after["git refs"].splitlines())


def test_hint_outside_dvc_and_under_dvc_repro(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: x\n    outs: [data/a]\n    metrics:\n      - metrics/a.json:\n          cache: false\n"
        "    plots:\n      - plots/b.csv:\n          cache: false\n      - data/c.csv\n", encoding="utf-8")
    assert dvc_restore_hint({}, tmp_path) is None
    repro = dvc_restore_hint({"DVC_ROOT": str(tmp_path), "DVC_STAGE": "a"}, tmp_path)
    assert repro.endswith("(params.yaml keeps your edits): git checkout HEAD -- dvc.lock metrics plots && dvc checkout")
    exp = {"DVC_ROOT": str(tmp_path), "DVC_STAGE": "a", "DVC_EXP_BASELINE_REV": "abc"}
    assert dvc_restore_hint(exp, tmp_path).endswith(": git checkout HEAD -- params.yaml dvc.lock metrics plots && dvc checkout")
    # A --temp or queued run: the stage runs in a copy, DVC_ROOT names the workspace.
    assert dvc_restore_hint(exp, tmp_path / ".dvc/tmp/exps/tmpabc") is None
