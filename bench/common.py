"""Shared bench helpers: medians of repeats, subprocess workers with peak RSS, rows, machine info."""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Every bench process is offline and single-threaded in the tokenizer (the raw baseline too), so
# "per core" comparisons are honest.
ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DVC_NO_ANALYTICS": "1",
}
os.environ.update(ENV)


@dataclass
class Row:
    name: str
    ours: float | None
    baseline: float | None
    unit: str
    ratio: float | None  # > 1 means ours is better (faster / more throughput)
    target: str
    met: bool | None
    note: str = ""
    extra: dict = field(default_factory=dict)


# Train and evaluate sides, each run in a fresh process: ours (the stage, which tunes the allocator
# first), baseline (the usual way, untuned), baseline_tuned (the usual way with our allocator tuning:
# the loops alone, informational).
SIDES = ("ours", "baseline", "baseline_tuned")


def tune_for(side: str) -> None:
    """Tune this process's allocator if the side runs with it, as the train/evaluate stages do first."""
    assert side in SIDES, side
    if side != "baseline":
        from lmtune import allocator

        allocator.tune_cpu_allocator()


def tuned_row(name: str, what: str, ours_tps: float, tuned_tps: float, base_tps: float, n: int, extra: dict) -> Row:
    """The informational row: ours against the baseline given the same allocator tuning."""
    return Row(
        f"{name}: vs {what} with the same allocator tuning", ours_tps, tuned_tps, "tokens/s", ours_tps / tuned_tps,
        "(informational)", None,
        note=(f"the loops alone: both processes set lmtune.allocator's tuning; median of {n} for this side; "
              f"the baseline's own gain from the tuning: {tuned_tps / base_tps:.2f}×"),
        extra=extra,
    )


def median(xs):
    return statistics.median(xs) if xs else None


def timed(fn, repeats: int):
    """(median seconds, all seconds, last result) of `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return median(times), times, result


def max_rss_mb() -> float:
    """This process's peak RSS. VmHWM is per address space, so it starts afresh at exec; ru_maxrss
    would not (Linux carries it over from the forking parent, here the bench's main process)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(module: str, *args, timeout: int = 900) -> dict:
    """Run `python -m bench.<module> args...` in a fresh process; it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *map(str, args)], cwd=ROOT, text=True,
        capture_output=True, env={**os.environ, **ENV}, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.{module} {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(obj: dict) -> None:
    """A worker's result: one JSON line on stdout, with its own peak RSS."""
    print(json.dumps({**obj, "max_rss_mb": round(max_rss_mb(), 1)}), flush=True)


def machine() -> dict:
    info = {"cpu": platform.processor() or "?", "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], text=True, capture_output=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    import torch
    import transformers

    info.update(torch=torch.__version__, transformers=transformers.__version__,
                torch_threads=torch.get_num_threads(), cuda=torch.cuda.is_available())
    return info


def fmt(x, unit=""):
    if x is None:
        return "—"
    if isinstance(x, float):
        s = f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
    else:
        s = f"{x:,}"
    return f"{s} {unit}".strip()


def table(rows: list[Row]) -> str:
    lines = ["| row | ours | baseline (same run) | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[r.met]
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        lines.append(f"| {r.name} | {fmt(r.ours, r.unit)} | {fmt(r.baseline, r.unit)} | {ratio} | {r.target} | {met} |")
    notes = [f"- **{r.name}**: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def to_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
