"""Helpers for the trust tests: copy a reproduced repo, fingerprint its outputs, run a stage and kill it."""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Repo

OUTPUTS = ("data", "models", "metrics")


def copy_repo(src: Repo, dest: Path) -> Repo:
    """A full copy (git, DVC cache, outputs) of a reproduced repo, to change without touching the original."""
    shutil.copytree(src.path, dest, symlinks=True)
    return Repo(dest)


TEMP = re.compile(r"(^|/)\.[^/]+\.(tmp|old)-[^/]*(/|$)")


def tree_hashes(root: Path, tops=OUTPUTS, skip=("models/checkpoints", "models/train-in-progress.json"), temps=True) -> dict[str, str]:
    """sha256 of every file under `tops`, by path relative to `root`.

    temps=False leaves out the temp dirs of an unfinished write (`.name.tmp-*`): a SIGKILL cannot clean
    them up, they are not outputs, and the next run of the stage sweeps them. The default `skip` leaves out
    the train stage's scratch: its checkpoints and its in-progress marker (lmtune.train.marker.RunMarker).
    """
    out = {}
    for top in tops:
        for f in sorted((root / top).rglob("*")):
            rel = f.relative_to(root).as_posix()
            if not temps and TEMP.search(rel):
                continue
            if f.is_file() and not any(rel == s or rel.startswith(s + "/") for s in skip):
                out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    """Temp or half-renamed outputs beside the real ones (`.name.tmp-*`, `.name.old-*`)."""
    return sorted(p.relative_to(root).as_posix() for top in OUTPUTS for p in (root / top).rglob(".*.tmp-*")) + sorted(
        p.relative_to(root).as_posix() for top in OUTPUTS for p in (root / top).rglob(".*.old-*")
    )


def kill_when(repo: Repo, cmd: list[str], ready: Path, poll: float = 0.01, timeout: float = 600) -> subprocess.CompletedProcess:
    """Start `cmd` in its own process group; SIGKILL the whole group as soon as `ready` exists.

    Returns the finished process (returncode -9 when it was killed, i.e. `ready` came before the end).
    """
    log = repo.path.parent / f"{repo.path.name}-killed.log"
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, cwd=repo.path, env=repo.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not ready.exists() and time.monotonic() < deadline:
            time.sleep(poll)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, log.read_text(encoding="utf-8"), "")


def python_stage(name: str) -> list[str]:
    return [sys.executable, "-m", f"stages.{name}"]


def run_until(repo: Repo, cmd: list[str], patterns: tuple[str, ...], timeout: float = 600) -> str:
    """Start `cmd` in its own process group and SIGKILL the group at the first output line holding one of
    `patterns` (or when it ends). Returns the output up to there: a stage's decision, without its whole run."""
    proc = subprocess.Popen(cmd, cwd=repo.path, env={**repo.env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, deadline = [], time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if any(p in line for p in patterns) or time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return "".join(lines)


class FlushedStdout:
    """A sys.stdout stand-in that remembers what had been flushed (to check a line is out before what follows)."""

    def __init__(self):
        self.buffered, self.flushed = "", ""

    def write(self, text):
        self.buffered += text

    def flush(self):
        self.flushed = self.buffered
