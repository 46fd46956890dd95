"""`dvc repro` rows, in a throwaway git + DVC copy of the project on recipes/tiny.yaml (bench/workspace.py).

No-op: `dvc repro` with everything up to date. Changing train.learning_rate: which stages run (parsed
from DVC's `Running stage '...'` lines) and the wall time of each run; download/flatten/tokenize/chunk
must not run, so the time spent in them is 0 s by construction when they are absent from the list.
One `dvc exp run -S train.learning_rate=...`: seconds per stage, DVC overhead and disk (bench/experiment.py).
"""
import re
import tempfile
import time
from pathlib import Path

from bench import experiment
from bench.common import Row, median
from bench.workspace import make_repo

UPSTREAM = ("download", "flatten", "tokenize", "chunk")


def _ran(out: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", out)


def bench(work: Path, repeats: int, lr_changes: int = 1) -> list[Row]:
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        repo = make_repo(Path(tmp) / "repo")
        start = time.perf_counter()
        first = repo.dvc("repro")
        full = time.perf_counter() - start
        repo.commit("repro")
        noop, noop_ran = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            proc = repo.dvc("repro")
            noop.append(time.perf_counter() - start)
            noop_ran += _ran(proc.stdout)
        floor = []
        for _ in range(repeats):  # DVC's own start-up: the floor under any repro
            start = time.perf_counter()
            repo.dvc("version")
            floor.append(time.perf_counter() - start)
        lr_runs, lr_ran = [], []
        lr = repo.params["train"]["learning_rate"]
        for i in range(lr_changes):
            repo.set_params({"train": {"learning_rate": lr * (2 + i)}})
            start = time.perf_counter()
            proc = repo.dvc("repro")
            lr_runs.append(time.perf_counter() - start)
            lr_ran.append(_ran(proc.stdout))
        repo.commit("lr")  # an experiment starts from a commit
        exp = experiment.measure(repo.path, lr * 0.5)
    upstream = sorted({s for ran in lr_ran for s in ran if s in UPSTREAM})
    noop_s = median(noop)
    return [
        Row("`dvc repro` no-op (all up to date)", noop_s, None, "s", None, "< 3 s", noop_s < 3 and not noop_ran,
            note=(f"tiny GPT-2 pipeline (recipes/tiny.yaml), median of {repeats}; stages run: {noop_ran or 'none'}; "
                  f"`dvc version` alone (DVC's start-up) takes {median(floor):.2f} s here; "
                  f"the first full repro took {full:.0f} s and ran {_ran(first.stdout)}"),
            extra={"runs_s": noop, "full_repro_s": full, "dvc_version_s": floor}),
        Row("change `train.learning_rate`: time in download/flatten/tokenize/chunk", 0.0 if not upstream else None, None,
            "s", None, "0 s (they are not run)", not upstream,
            note=(f"stages run per change: {lr_ran[0]} (all {lr_changes} change(s): upstream stages run = {upstream or 'none'}); "
                  f"whole `dvc repro` after the change: median {median(lr_runs):.0f} s"),
            extra={"stages_run": lr_ran, "repro_s": lr_runs}),
        *experiment.rows("tiny GPT-2", exp, default_targets=False),
    ]
