"""What one `dvc exp run -S train.learning_rate=...` costs: seconds per stage, DVC's own overhead, and disk.

Each stage's seconds run from DVC's `Running stage 'X'` line to the stage's last output line (the stage
process prints its summary as it exits); the rest of the wall time (start-up, hashing and committing
outputs, the lock file, the experiment commit) is DVC overhead. Disk growth counts each inode once, so a
hardlinked output and its cache file are one copy. The non-train share is (evaluate + export + harness + DVC
overhead) / train (target <= 0.45 since the harness stage, issue 26; it was <= 0.30).

`make bench` measures it on the tiny pipeline (`dvc` rows). On the default (SmolLM2) it needs a reproduced
workspace, so it is its own command: `make repro && python -m bench.experiment` (results in RESULTS.md).
"""
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, Row

STAGE = re.compile(r"Running stage '([^']+)'")


def disk_bytes(root: Path) -> int:
    seen, total = set(), 0
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git"]
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def split_stages(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds per stage from timestamped DVC output, plus `dvc_overhead` (the rest of `total`)."""
    out, current, start, last = {}, None, 0.0, 0.0
    for t, line in lines:
        m = STAGE.search(line)
        if m:
            current, start, last = m.group(1), t, t
        elif current and line.startswith("Updating lock file"):
            out[current] = out.get(current, 0.0) + (last - start)
            current = None
        elif current and line.strip() and not line.startswith(">"):
            last = t
    out["dvc_overhead"] = total - sum(out.values())
    return out


def timed_exp_run(repo: Path, args: list[str], env: dict | None = None) -> tuple[dict, float, str]:
    """Run `dvc exp run ARGS` in `repo`; (seconds per stage, wall seconds, output)."""
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([dvc, "exp", "run", *args], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    if proc.wait() != 0:
        raise RuntimeError("dvc exp run failed:\n" + "\n".join(line for _, line in lines[-40:]))
    total = time.perf_counter() - start
    return split_stages(lines, total), total, "\n".join(line for _, line in lines)


def measure(repo: Path, lr: float, env: dict | None = None) -> dict:
    weights = (repo / "models/final/model.safetensors").stat().st_size
    before = disk_bytes(repo)
    stages, total, out = timed_exp_run(repo, ["-S", f"train.learning_rate={lr}"], env)
    growth = disk_bytes(repo) - before
    train = stages.get("train", 0.0)
    non_train = total - train
    return {"stages_s": {k: round(v, 1) for k, v in stages.items()}, "total_s": round(total, 1),
            "non_train_share": round(non_train / train, 3) if train else None,
            "disk_growth_bytes": growth, "weights_bytes": weights, "growth_vs_weights": round(growth / weights, 3),
            "ran": STAGE.findall(out)}


def rows(label: str, r: dict, default_targets: bool) -> list[Row]:
    s = r["stages_s"]
    split = ", ".join(f"{k} {v:.1f} s" for k, v in s.items())
    share, ratio = r["non_train_share"], r["growth_vs_weights"]
    return [
        Row(f"{label}: `dvc exp run -S train.learning_rate`: (evaluate + export + harness + DVC) / train", share, None,
            "x", None, "<= 0.45 at the defaults" if default_targets else "informational (target is for the defaults)",
            (share is not None and share <= 0.45) if default_targets else None,
            note=f"{split}; whole run {r['total_s']:.1f} s; stages run: {r['ran']}", extra=r),
        Row(f"{label}: disk growth per `train.*` experiment / weights file", ratio, None, "x", None, "<= 1.2",
            ratio <= 1.2, note=f"{r['disk_growth_bytes'] / 2**20:.1f} MiB for a {r['weights_bytes'] / 2**20:.1f} MiB weights file "
                              "(DVC cache + workspace, each inode once)", extra=r),
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.experiment", description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="a reproduced workspace (`make repro` first)")
    ap.add_argument("--lr", type=float, default=None, help="default: 1.5x the workspace's train.learning_rate")
    a = ap.parse_args(argv)
    import yaml

    lr = a.lr or 1.5 * yaml.safe_load((a.repo / "params.yaml").read_text(encoding="utf-8"))["train"]["learning_rate"]
    r = measure(a.repo, lr)
    from bench.common import table

    print(table(rows("default (SmolLM2)", r, default_targets=True)))


if __name__ == "__main__":
    main()
