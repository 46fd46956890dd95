"""Shared test fixtures: an offline environment and a throwaway copy of the repo for `dvc repro` runs.

The copy itself (Repo, make_repo: the project at recipes/tiny.yaml in a temp git + DVC repo) is
bench/workspace.py, shared with the bench; the other test helpers are repo_tools.py (copies, hashes, kills),
task_helpers.py, browser.py and stage_faults.py beside this file.
"""
import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.workspace import OFFLINE_ENV, ROOT, VENV_BIN, Repo, make_repo  # noqa: F401 - the tests import these from here
from lmtune.cli.recipe import deep_update  # noqa: F401 - likewise

FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.update(OFFLINE_ENV)  # nothing in a test may reach the hub
# pytest-xdist's workers (make test) set COLUMNS=80 and LINES=24; commands run by the tests must see what any
# non-terminal run sees (lmtune.cli.compare sizes its table from COLUMNS), not the test runner's choice.
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)


@pytest.fixture
def tiny_repo(tmp_path) -> Repo:
    return make_repo(tmp_path / "repo")


def _reproduced(dest: Path) -> str:
    """make_repo at `dest`, then one full `dvc repro`; returns its output."""
    repo = make_repo(dest)
    # Every stage also reports the modules it imports (stderr, merged in order with DVC's stage lines):
    # tests/test_graph.py checks them against each stage's declared deps.
    proc = subprocess.run([str(VENV_BIN / "dvc"), "repro"], cwd=repo.path, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env={**repo.env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> Repo:
    """One full `dvc repro` of the tiny pipeline, shared by the tests that only read its outputs.

    A test that changes anything (params, outputs, experiments) works on `repo_tools.copy_repo(tiny_repro, ...)`;
    `_tiny_repro_unchanged` fails the test that does not. Under pytest-xdist the first worker to ask builds it
    once in the workers' common temp dir (under a lock; a full repro is ~1 min of CPU) and each worker reads
    its own copy (DVC commands take a lock on the repo they run in, so two workers must not share one).
    """
    dest = tmp_path_factory.mktemp("e2e") / "repo"
    if "PYTEST_XDIST_WORKER" not in os.environ:  # no xdist
        output = _reproduced(dest)
    else:
        shared = tmp_path_factory.getbasetemp().parent / "tiny_repro"
        shared.mkdir(exist_ok=True)
        with open(shared / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not (shared / "repro_output.txt").is_file():
                (shared / "repro_output.txt").write_text(_reproduced(shared / "repo"), encoding="utf-8")
        output = (shared / "repro_output.txt").read_text(encoding="utf-8")
        shutil.copytree(shared / "repo", dest, symlinks=True)
    repo = Repo(dest)
    repo.repro_output = output
    return repo


# What the guard hashes: every output, the report folder (`make compare` writes reports/), the params, graph and
# lock files, DVC's own config (a remote added by a test would leak into the next) and every git ref
# (`dvc exp run` adds refs/exps/...).
GUARDED_TREES = ("data", "models", "metrics", "reports")
GUARDED_FILES = ("params.yaml", "dvc.yaml", "dvc.lock", ".dvc/config", ".dvc/config.local")


def repo_state(repo: Repo) -> dict[str, str]:
    """sha256 of every guarded file (absent: "absent"), and the `git for-each-ref` listing."""
    from repo_tools import tree_hashes

    state = tree_hashes(repo.path, tops=GUARDED_TREES, skip=())
    for f in GUARDED_FILES:
        path = repo.path / f
        state[f] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
    state["git refs"] = repo.run("git", "for-each-ref").stdout
    return state


def changed_keys(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


@pytest.fixture(autouse=True)
def _tiny_repro_unchanged(request):
    """Every test that sees the shared `tiny_repro` (directly or through another fixture) leaves it as it was,
    so no later test runs on a state some earlier test left behind. tests/test_guard.py checks it fails."""
    if "tiny_repro" not in request.fixturenames:
        yield
        return
    repo = request.getfixturevalue("tiny_repro")
    before = repo_state(repo)
    yield
    changed = changed_keys(before, repo_state(repo))
    assert not changed, f"the test changed the shared tiny_repro (use repo_tools.copy_repo): {changed}"


# `make test` runs two pytest-xdist workers with --dist loadfile: whole files go to whichever worker is free,
# in collection order (--no-loadscope-reorder: xdist's default reorder, by number of tests per file, sent the
# few-test, slow files such as test_recipes_tasks.py, test_recipe_chat.py and test_fsdp.py last). Collecting
# the longest files first keeps a worker from starting a long file when the other is nearly done. Per-file
# seconds from `make test` with --durations on the idle 2-core machine (the file whose test first reads tiny_repro
# also pays its ~43 s): recipes 184, compare_e2e 165, recipes_tasks 155, recipe_chat 99, team 85, trust 72,
# fsdp 68, memory 67, checkpoints 42, experiments 33, bad_inputs 25, num_processes 23, export 20,
# pipeline_e2e 19, distributed 19, harness_e2e 17; the rest < 12 each.
LONGEST_FIRST = ["test_recipes.py", "test_compare_e2e.py", "test_recipes_tasks.py", "test_recipe_chat.py",
                 "test_team.py", "test_trust.py", "test_fsdp.py", "test_memory.py", "test_checkpoints.py",
                 "test_experiments.py", "test_bad_inputs.py", "test_num_processes.py", "test_export.py",
                 "test_pipeline_e2e.py", "test_distributed.py", "test_harness_e2e.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
