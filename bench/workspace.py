"""A throwaway git + DVC copy of the project, set to a recipe: where the tests and the bench run the pipeline.

`make_repo(dest)` copies the tracked project files (not data/, models/, .venv or the committed dvc.lock and
metrics/), applies recipes/tiny.yaml (the tiny pipeline, lmtune.cli.recipe's loader) and commits. `Repo`
runs commands there with the venv on PATH and nothing reaching the hub. tests/conftest.py and
bench/dvcrepro.py both build on it, so the bench imports the library and this module, never the tests.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from lmtune.cli import recipe
from lmtune.paths import ROOT

VENV_BIN = Path(sys.executable).parent
TINY_RECIPE = "tiny"

# Nothing run in a copy may reach the hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
}


def tiny_overrides(extra: dict | None = None) -> dict:
    """recipes/tiny.yaml's overrides, with `extra` on top."""
    return recipe.deep_update(recipe.load(TINY_RECIPE), extra or {})


class Repo:
    """A git + DVC copy of the project in a temp dir, with the venv on PATH."""

    def __init__(self, path: Path):
        self.path = Path(path)
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
        return yaml.safe_load((self.path / "params.yaml").read_text(encoding="utf-8"))

    def set_params(self, overrides: dict) -> None:
        text = yaml.safe_dump(recipe.deep_update(self.params, overrides), sort_keys=False, allow_unicode=True)
        (self.path / "params.yaml").write_text(text, encoding="utf-8")

    def commit(self, msg="test"):
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", msg, "--allow-empty")


def copy_project(dest: Path) -> None:
    """The tracked (and untracked, not ignored) project files, without the committed run's lock and metrics."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True, encoding="utf-8",
                           capture_output=True, check=True).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    (dest / "dvc.lock").unlink(missing_ok=True)  # the committed lock belongs to the default run, not this copy's params
    shutil.rmtree(dest / "metrics", ignore_errors=True)
    (dest / "metrics").mkdir()


def make_repo(dest: Path, overrides: dict | None = None) -> Repo:
    """A committed git + DVC copy of the project at `dest`, on the tiny recipe plus `overrides`."""
    dest = Path(dest)
    copy_project(dest)
    repo = Repo(dest)
    repo.run("git", "init", "-q")
    repo.run("git", "config", "user.email", "test@example.com")
    repo.run("git", "config", "user.name", "test")
    repo.set_params(tiny_overrides(overrides))
    repo.commit("init")
    return repo
