"""Run every dvc.yaml stage in one process with the renames onto (or off) its outputs intercepted (tests/test_trust.py).

For each stage, on a reproduced repo (the current directory):
- `swallow`: every rename onto an output is recorded and skipped, and the stage runs to its end;
- `refuse` n = 1, 2, ...: the n-th rename that touches an output (onto it, or moving it aside or back) fails,
  as a full disk or a kill at that point would, until the stage needs fewer renames than n and finishes.
A stage that writes its outputs only as temp + rename therefore changes no output file in `swallow` mode
(not its bytes, not its mtime or inode) and commits each of its declared outputs by a rename; as the stages
are deterministic, what each would have committed is also compared with the output already there
(`differs`). After each `refuse` run every output is reported `old` (every file as it was: bytes, mtime,
inode), `new` (every file rewritten, same bytes but for wall-clock files) or `mixed`, with the temps left.
Prints one JSON report; temps left in `swallow` mode are expected (the renames that would move them in place
never happen).

The train stage's training loop runs once, in its `swallow` run, and its result is reused by its `refuse`
runs: what they test comes after it (saving and committing the outputs), and ten tiny trainings would
double this test's time.
"""
import json
import os
import runpy
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the repo copy's stages/ and lmtune/

import yaml  # noqa: E402

ROOT = Path.cwd().resolve()


def declared_outputs(stage: dict) -> list[str]:
    """outs, metrics and plots of a stage; `persist` outs (resumable checkpoints) are written in place by design."""
    out = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key) or []:
            path, opts = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            if not (opts or {}).get("persist"):
                out.append(path)
    return out


def state(paths: list[str]) -> dict[str, tuple]:
    """(bytes, mtime_ns, inode) of every file under the outputs: a rewrite in place changes mtime at least."""
    import hashlib

    files = {}
    for rel in paths:
        root = ROOT / rel
        for f in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            st = f.stat()
            files[f.relative_to(ROOT).as_posix()] = (hashlib.sha256(f.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_ino)
    return files


def contents(path) -> dict[str, str]:
    """sha256 per file of a file or folder, by path relative to it."""
    import hashlib

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {f.relative_to(path).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def temps(paths: list[str]) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for rel in paths
                  for pat in (".{}.tmp-*", ".{}.old-*") for p in (ROOT / rel).parent.glob(pat.format(Path(rel).name)))


WALL_CLOCK = {"metrics/train_timing.json"}  # rewritten with other bytes by every run


class Refused(OSError):
    pass


def status(before: dict, after: dict, out: str) -> str:
    """old / new / mixed for one output, from state() before and after a run."""
    def mine(files):
        return {k: v for k, v in files.items() if k == out or k.startswith(out + "/")}
    b, a = mine(before), mine(after)
    if a == b:
        return "old"
    same_files = a.keys() == b.keys() and all(a[k][0] == b[k][0] or k in WALL_CLOCK for k in a)
    if same_files and not any(a[k][1:] == b[k][1:] for k in a):
        return "new"
    return "mixed"


def run(module: str, outs: list[str], mode: str, n: int = 0) -> dict:
    targets = {str(ROOT / o) for o in outs}
    committed, seen, real_replace, real_rename = [], [0], os.replace, os.rename
    injected = []  # the refusal raised (the stage's cli turns an OSError into exit 1 after its restore hint)

    def intercept(real):
        def rename(src, dst, *args, **kwargs):
            s, d = os.path.abspath(src), os.path.abspath(dst)
            if not {s, d} & targets:
                return real(src, dst, *args, **kwargs)
            seen[0] += 1
            if mode == "refuse":
                if seen[0] == n:
                    injected.append(n)
                    raise Refused(f"injected: rename {src} -> {dst} refused")
                return real(src, dst, *args, **kwargs)
            if d in targets:
                committed.append((Path(d).relative_to(ROOT).as_posix(), s))
        return rename

    before = state(outs)
    os.replace, os.rename = intercept(real_replace), intercept(real_rename)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        result = "finished"
    except Refused:
        result = "refused"
    except SystemExit as e:
        # lmtune.errors.cli ends a stage that failed with exit 1; after the injected refusal that is the refusal.
        result = "refused" if injected and e.code == 1 else f"SystemExit: {e.code}"
    except BaseException as e:  # noqa: BLE001 (a bug: reported)
        result = f"{type(e).__name__}: {e}"
    finally:
        os.replace, os.rename = real_replace, real_rename
    after = state(outs)
    if mode == "refuse":
        return {"n": n, "result": result, "renames": seen[0], "temps": temps(outs),
                "outputs": {o: status(before, after, o) for o in outs}}
    return {"result": result, "changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),
            "temps": temps(outs), "committed": sorted({d for d, _ in committed}), "outputs": sorted(outs),
            "differs": sorted(d for d, s in committed if contents(s) != contents(ROOT / d))}


def refusals(module: str, outs: list[str]) -> list[dict]:
    """`refuse` runs for n = 1, 2, ... up to the first that finishes (at most 50: a stage that never
    finishes is reported as such)."""
    runs = []
    for n in range(1, 51):
        runs.append(run(module, outs, "refuse", n))
        if runs[-1]["result"] != "refused":
            break
    return runs


def reuse_training() -> None:
    """After the first call, lmtune.train.trainer.train returns that call's result (the module docstring says why)."""
    from lmtune.train import trainer

    real, memo = trainer.train, []

    def train(*args, **kwargs):
        if not memo:
            memo.append(real(*args, **kwargs))
        return memo[0]

    trainer.train = train


def main() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    reuse_training()
    report = {}
    for name, stage in stages.items():
        module = stage["cmd"].split()[-1]  # python -m stages.NAME
        outs = declared_outputs(stage)
        swallowed = run(module, outs, "swallow")
        for rel in swallowed["temps"]:  # expected there (see above); not to be blamed on the refuse runs
            shutil.rmtree(ROOT / rel, ignore_errors=True) if (ROOT / rel).is_dir() else (ROOT / rel).unlink()
        report[name] = {"swallow": swallowed, "refuse": refusals(module, outs)}
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
