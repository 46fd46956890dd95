"""Run every dvc.yaml stage in one process with the renames onto its outputs intercepted (tests/test_trust.py).

For each stage, twice, on a reproduced repo (the current directory):
- `raise`: the first rename onto one of the stage's outputs fails (a full disk, a kill at the commit point);
- `swallow`: every rename onto an output is recorded and skipped, and the stage runs to its end.
A stage that writes its outputs only as temp + rename therefore changes no output file in either mode
(not its bytes, not its mtime or inode), leaves no temp behind in `raise` mode, and commits each of its
declared outputs by a rename in `swallow` mode. As the stages are deterministic, what each would have
committed in `swallow` mode is also compared with the output already there (`differs`). Prints one JSON report; temps left in `swallow` mode are
expected (the renames that would move them in place never happen).
"""
import json
import os
import runpy
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


class Refused(OSError):
    pass


def run(module: str, outs: list[str], mode: str) -> dict:
    targets = {str(ROOT / o) for o in outs}
    committed, real_replace, real_rename = [], os.replace, os.rename

    def intercept(real):
        def rename(src, dst, *args, **kwargs):
            s, d = os.path.abspath(src), os.path.abspath(dst)
            if not {s, d} & targets:
                return real(src, dst, *args, **kwargs)
            if mode == "raise":
                raise Refused(f"injected: rename {src} -> {dst} refused")
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
    except BaseException as e:  # noqa: BLE001 (a SystemExit from the stage's cli, or a bug: reported)
        result = f"{type(e).__name__}: {e}"
    finally:
        os.replace, os.rename = real_replace, real_rename
    after = state(outs)
    return {"result": result, "changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),
            "temps": temps(outs), "committed": sorted({d for d, _ in committed}), "outputs": sorted(outs),
            "differs": sorted(d for d, s in committed if contents(s) != contents(ROOT / d))}


def main() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    report = {}
    for name, stage in stages.items():
        module = stage["cmd"].split()[-1]  # python -m stages.NAME
        outs = declared_outputs(stage)
        report[name] = {mode: run(module, outs, mode) for mode in ("raise", "swallow")}
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
