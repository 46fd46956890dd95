"""Shared test fixtures: an offline environment and a throwaway copy of the repo for `dvc repro` runs."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmtune.cli.recipe import deep_update
from tests.tiny import TINY  # the repo root is on sys.path: pytest.ini's pythonpath

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VENV_BIN = Path(sys.executable).parent

# Nothing in a test may reach the hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
}
os.environ.update(OFFLINE_ENV)
# pytest-xdist's workers (make test) set COLUMNS=80 and LINES=24; commands run by the tests must see what any
# non-terminal run sees (lmtune.cli.compare sizes its table from COLUMNS), not the test runner's choice.
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)

class Repo:
    """A git + DVC copy of the project in a temp dir, with the venv on PATH."""

    def __init__(self, path: Path):
        self.path = path
        self.env = {**os.environ, **OFFLINE_ENV, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}

    def run(self, *cmd, check=True, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=self.path, env=self.env, text=True, capture_output=True, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    def dvc(self, *args, **kw):
        return self.run(str(VENV_BIN / "dvc"), *args, **kw)

    def stage(self, name, **kw):
        return self.run(sys.executable, "-m", f"stages.{name}", **kw)

    @property
    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def set_params(self, overrides: dict) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(deep_update(self.params, overrides), sort_keys=False))

    def commit(self, msg="test"):
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", msg, "--allow-empty")


def make_repo(dest: Path, overrides: dict | None = None) -> Repo:
    """Copy the tracked project files (not data/models/.venv) to `dest` and init git there."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    for f in ("dvc.lock",):  # the committed lock belongs to the default run, not to this copy's params
        (dest / f).unlink(missing_ok=True)
    for d in ("metrics",):
        shutil.rmtree(dest / d, ignore_errors=True)
        (dest / d).mkdir()
    repo = Repo(dest)
    repo.run("git", "init", "-q")
    repo.run("git", "config", "user.email", "test@example.com")
    repo.run("git", "config", "user.name", "test")
    repo.set_params(deep_update(TINY, overrides or {}))
    repo.commit("init")
    return repo


@pytest.fixture
def tiny_repo(tmp_path) -> Repo:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> Repo:
    """One full `dvc repro` of the tiny pipeline, shared by the tests that only read its outputs.

    A test that changes anything (params, outputs, experiments) works on `repo_tools.copy_repo(tiny_repro, ...)`;
    `_tiny_repro_unchanged` fails the test that does not.
    """
    repo = make_repo(tmp_path_factory.mktemp("e2e") / "repo")
    # Every stage also reports the modules it imports (stderr, merged in order with DVC's stage lines):
    # tests/test_graph.py checks them against each stage's declared deps.
    proc = subprocess.run([str(VENV_BIN / "dvc"), "repro"], cwd=repo.path, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env={**repo.env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stdout[-5000:]
    repo.repro_output = proc.stdout
    return repo


def repo_state(repo: Repo) -> dict[str, str]:
    """sha256 of every output, params and lock file, and every git ref (`dvc exp run` adds refs/exps/...)."""
    from repo_tools import tree_hashes

    state = tree_hashes(repo.path, skip=())
    for f in ("params.yaml", "dvc.yaml", "dvc.lock"):
        state[f] = hashlib.sha256((repo.path / f).read_bytes()).hexdigest()
    state["git refs"] = repo.run("git", "for-each-ref").stdout
    return state


@pytest.fixture(autouse=True)
def _tiny_repro_unchanged(request):
    """Every test that sees the shared `tiny_repro` (directly or through another fixture) leaves it as it was,
    so no later test runs on a state some earlier test left behind."""
    if "tiny_repro" not in request.fixturenames:
        yield
        return
    repo = request.getfixturevalue("tiny_repro")
    before = repo_state(repo)
    yield
    after = repo_state(repo)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the test changed the shared tiny_repro (use repo_tools.copy_repo): {changed}"


# `make test` runs two pytest-xdist workers with --dist loadfile: whole files go to whichever worker is free,
# in collection order. Collecting the longest files first keeps a worker from starting a long file when the
# other is nearly done (per-file seconds from `pytest --durations`, 2-core machine: the recipes ~300 s each,
# compare_e2e ~280, memory / trust / bad_inputs / team 120-150, pipeline_e2e / experiments 70-90).
LONGEST_FIRST = ["test_recipes.py", "test_recipes_tasks.py", "test_compare_e2e.py", "test_memory.py", "test_trust.py",
                 "test_bad_inputs.py", "test_team.py", "test_pipeline_e2e.py", "test_experiments.py", "test_harness_e2e.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
