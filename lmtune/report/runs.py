"""The runs compare reads, from DVC's own outputs only.

- `dvc exp show --json`: each run's params, metrics (metrics/eval.json, train_timing.json) and deps;
- `dvc.api.read(metrics/blocks.csv, rev=...)`: the per-unit NLL and counts at each run's revision;
- the run's dvc.lock: whether its metrics were computed from its own model (`stale_metrics`).
"""
import csv
import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lmtune import paths
from lmtune.errors import UserError


def rel(path: Path) -> str:
    return path.relative_to(paths.ROOT).as_posix()


@dataclass
class Run:
    name: str                      # experiment name, branch or short commit, or "workspace"
    rev: str | None                # git commit of the run (None: the workspace)
    params: dict                   # params.yaml, flattened to dotted keys
    eval: dict                     # metrics/eval.json: {"base": {...}, "tuned": {...}}
    timing: dict = field(default_factory=dict)          # metrics/train_timing.json
    base_model: str | None = None  # hash of the models/base dep: which base model
    blocks: dict | None = None     # metrics/blocks.csv columns as arrays
    harness: dict | None = None    # metrics/harness.json: lm-evaluation-harness, base beside tuned

    @property
    def task(self) -> str:
        return self.params.get("task", "causal_lm")

    @property
    def plot_rev(self) -> str:
        return self.rev or "workspace"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def dvc_json(*args: str):
    """`dvc ARGS --json` in the repo, parsed; a failure is one line naming the command."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=paths.ROOT, text=True, capture_output=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"dvc {' '.join(args)}: {last}")
    return json.loads(proc.stdout)


def _file_data(data: dict, kind: str, path: Path) -> dict | None:
    entry = (data.get(kind) or {}).get(rel(path)) or {}
    return entry.get("data")


def _run_of(entry: dict, name: str, rev: str | None, state: str | None) -> tuple[Run | None, str | None]:
    """(the run, None) or (None, why it is left out) for one revision of `dvc exp show --json`."""
    data = entry.get("data") or {}
    if entry.get("error") or state in ("failed", "queued", "running"):
        return None, f"{name}: {state or 'error: ' + str(entry['error'].get('msg', entry['error']))}"
    ev = _file_data(data, "metrics", paths.EVAL_METRICS)
    params = _file_data(data, "params", paths.PARAMS)
    if not ev or "tuned" not in ev or params is None:
        return None, f"{name}: no {rel(paths.EVAL_METRICS)} (not run through evaluate)"
    base_dep = (data.get("deps") or {}).get(rel(paths.BASE)) or {}
    timing = _file_data(data, "metrics", paths.TRAIN_TIMING) or {}
    harness = _file_data(data, "metrics", paths.HARNESS_METRICS)
    return Run(name, rev, flatten(params), ev, timing, base_dep.get("hash"), harness=harness), None


def _revisions(rows: list[dict]):
    """(entry, name, rev, state) per revision: each commit, then its experiments, then the workspace."""
    workspace = None
    for row in rows:
        if row["rev"] == "workspace":
            workspace = row
            continue
        yield row, row.get("name") or row["rev"][:7], row["rev"], None
        for exp in row.get("experiments") or []:
            revs = exp.get("revs") or []
            if revs:
                name = exp.get("name") or revs[0].get("name") or revs[0]["rev"][:7]
                yield revs[0], name, revs[0]["rev"], (exp.get("executor") or {}).get("state")
    if workspace:
        yield workspace, "workspace", None, None


def runs_from_exp_show(rows: list[dict]) -> tuple[list[Run], list[str]]:
    """`dvc exp show --json` -> runs with metrics, plus one note per run left out (and why).

    Order: each commit, then its experiments, then the workspace, so a duplicate (the workspace after
    `dvc exp run`, or after a commit of the same results) keeps the named run.
    """
    runs, skipped = [], []
    for entry, name, rev, state in _revisions(rows):
        run, why = _run_of(entry, name, rev, state)
        if why:
            skipped.append(why)
            continue
        twin = next((o for o in runs if o.params == run.params and o.eval == run.eval and o.timing == run.timing), None)
        if twin:
            skipped.append(f"{run.name}: same params and metrics as {twin.name}")
        else:
            runs.append(run)
    seen: dict[str, int] = {}
    for r in runs:  # --all: one experiment name can exist on two commits
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}@{r.rev[:7]}"
    return runs, skipped


def matches(run: Run, wanted: str) -> bool:
    """`wanted` names the run: experiment name, branch, 'workspace' or a commit prefix (4+ characters)."""
    return wanted in (run.name, run.plot_rev) or (len(wanted) >= 4 and bool(run.rev) and run.rev.startswith(wanted))


def select(runs: list[Run], wanted: list[str]) -> list[Run]:
    """The runs named by experiment name, branch, commit (prefix) or 'workspace', in `wanted` order."""
    out = []
    for w in wanted:
        hits = [r for r in runs if matches(r, w)]
        if not hits:
            raise UserError(f"compare: no run {w!r} with metrics; known: {', '.join(r.name for r in runs) or 'none'}")
        out += [h for h in hits if h not in out]
    return out


def parse_blocks(text: str) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def read_blocks(run: Run) -> dict | None:
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return parse_blocks(dvc.api.read(rel(paths.BLOCKS), repo=str(paths.ROOT), rev=run.rev)) or None
    except (FileNotFoundError, DvcException):
        return None  # a run from before evaluate wrote per-block numbers: no interval, no verdict


def read_lock(run: Run) -> dict | None:
    """The run's dvc.lock (git-tracked: `git show REV:dvc.lock`; the workspace's file), None if absent."""
    if run.rev is None:
        path = paths.ROOT / "dvc.lock"
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    else:
        proc = subprocess.run(["git", "show", f"{run.rev}:dvc.lock"], cwd=paths.ROOT, capture_output=True, text=True)
        text = proc.stdout if proc.returncode == 0 else None
    return yaml.safe_load(text) if text else None


def stale_metrics(lock: dict, metrics: str = rel(paths.EVAL_METRICS)) -> str | None:
    """Why `metrics` was not computed from this run's own outputs, or None when it was.

    Each stage DVC ran records the hash of every dep it read. The stage that wrote `metrics`, and every
    stage upstream of it, must have read the outputs the upstream stages last wrote: after
    `dvc exp run -s train`, train wrote a new models/final while evaluate's entry still holds the hash
    of the parent's model, so metrics/eval.json is the parent's.
    """
    stages = (lock or {}).get("stages") or {}
    made_by = {o["path"]: (name, o.get("md5")) for name, st in stages.items() for o in st.get("outs") or []}
    if metrics not in made_by:
        return None
    todo, seen = [made_by[metrics][0]], set()
    while todo:
        stage = todo.pop()
        if stage in seen:
            continue
        seen.add(stage)
        for dep in stages[stage].get("deps") or []:
            if dep["path"] in made_by:
                producer, md5 = made_by[dep["path"]]
                if dep.get("md5") != md5:
                    return (f"{metrics} is not from its own model: dvc.lock's {stage} read {dep['path']} "
                            f"{str(dep.get('md5'))[:8]}, but {producer} wrote {str(md5)[:8]} (a run of only "
                            f"some stages, e.g. `dvc exp run -s {producer}`)")
                todo.append(producer)
    return None


def collect(wanted: list[str], all_commits: bool) -> tuple[list[Run], list[str]]:
    """The runs to compare, with their per-unit rows, and one note per run left out."""
    args = ["exp", "show"] + (["--all-commits"] if all_commits or wanted else [])
    runs, skipped = runs_from_exp_show(dvc_json(*args))
    if wanted:
        runs, skipped = select(runs, wanted), []
    kept = []
    for r in runs:
        why = stale_metrics(read_lock(r))
        if why:
            skipped.append(f"{r.name}: {why}")
            continue
        r.blocks = read_blocks(r)
        kept.append(r)
    return kept, skipped
