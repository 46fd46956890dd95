"""Atomic writes: build outputs at a temporary path beside the target, then rename over it.

An interrupted or failing stage therefore leaves the previous output exactly as it was.
"""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield an empty temp dir; on success it replaces `target` (old one removed), on error it is deleted."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stable_dataset_fingerprints(tmp)
    replace_dir(tmp, target)


def stable_dataset_fingerprints(root: Path) -> None:
    """Replace the fingerprint `datasets` writes into each saved split's state.json with a hash of the
    split's data files.

    The library's fingerprint depends on temp paths and caching state, so two runs that save the same
    rows would otherwise differ in one line, and DVC would hash the two data dirs differently.
    """
    for state_file in Path(root).rglob("state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(state, dict) or "_fingerprint" not in state or "_data_files" not in state:
            continue
        h = hashlib.sha256()
        for entry in state["_data_files"]:
            with open(state_file.parent / entry["filename"], "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        state["_fingerprint"] = h.hexdigest()[:16]
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True))


def sweep_temps(target: Path) -> None:
    """Remove temp/old siblings of `target` that a killed run (SIGKILL, power loss) left behind.

    Only one run of a stage writes a target at a time (DVC locks the repo), so any are stale.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{target.name}.old-*"))
    if olds and not target.exists():
        # Killed between replace_dir's two renames: the previous output is the .old one; put it back.
        os.replace(olds.pop(), target)
    for stale in [*target.parent.glob(f".{target.name}.tmp-*"), *olds]:
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished dir `tmp` (same parent) in place of `target` with renames only."""
    target = Path(target)
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    # sort_keys + fixed indent: identical runs give byte-identical files that git and `dvc metrics diff` compare.
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
