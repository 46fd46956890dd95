"""`make bench`: our pipeline's functions against the usual way, side by side in one run.

Prints a markdown table and writes metrics/bench.json (not a dvc.yaml metric, so `dvc metrics diff`
ignores it). Sizes are flags; the defaults fit in ~10 minutes on a 2-core CPU. A GPU machine can pass
bigger ones, e.g. `python -m bench --smollm2-steps 50 --smollm2-batch 8 --eval-blocks 256`.
"""
import argparse
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Row, machine, table, to_json

ROWS = ("chunk", "tokenize", "train", "evaluate", "memory", "dvc")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement (the median is reported; train rotates which side goes first)")
    ap.add_argument("--chunk-tokens", type=float, default=10e6)
    ap.add_argument("--chunk-large-tokens", type=float, default=100e6)
    ap.add_argument("--chunk-repeats", type=int, default=5, help="timed runs per chunk side (ours takes ~0.1 s a run)")
    ap.add_argument("--chunk-sum-repeats", type=int, default=1, help="the seeds' sum(lists, []) baseline is quadratic")
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--tokenize-batch", type=int, default=1000)
    ap.add_argument("--synthetic-mb", type=float, default=50, help="synthetic text for the tokenize row (0: skip)")
    ap.add_argument("--synthetic-repeats", type=int, default=1)
    ap.add_argument("--gpt2-steps", type=int, default=8)
    ap.add_argument("--gpt2-batch", type=int, default=4)
    ap.add_argument("--smollm2-steps", type=int, default=4, help="0: skip the SmolLM2 train row")
    ap.add_argument("--smollm2-batch", type=int, default=1)
    ap.add_argument("--smollm2-block", type=int, default=128)
    ap.add_argument("--tuned-repeats", type=int, default=3,
                    help="runs of SmolLM2's informational train side, the plain Trainer with our allocator tuning (0: skip it, and evaluate's)")
    ap.add_argument("--eval-blocks", type=int, default=8, help="SmolLM2 validation blocks (tiny GPT-2: 4x as many)")
    ap.add_argument("--eval-batch", type=int, default=8)
    ap.add_argument("--eval-processes", type=int, default=3,
                    help="fresh processes per SmolLM2 evaluate side, each one warm-up + 1 timed evaluation (the informational side: 1)")
    ap.add_argument("--memory-steps", type=int, default=10,
                    help="tiny GPT-2 training steps per memory run (>= 3: AdamW's state exists from step 2)")
    ap.add_argument("--memory-repeats", type=int, default=3, help="fresh tiny GPT-2 runs per memory row (the median is reported)")
    ap.add_argument("--memory-smollm2-steps", type=int, default=5, help="SmolLM2 training steps per memory run (one run per row)")
    ap.add_argument("--memory-shapes", default="4x256,1x1024", help="micro-batch x block shapes for the memory rows")
    ap.add_argument("--memory-smollm2-shapes", default="4x256,2x256,1x1024",
                    help="the same for SmolLM2 (2x256: the default params' shape)")
    ap.add_argument("--memory-models", default="tiny,smollm2", help="models for the memory rows: tiny, smollm2 or both")
    ap.add_argument("--lr-changes", type=int, default=1)
    ap.add_argument("--smollm2-dir", type=Path, default=Path.home() / ".cache" / "lmtune-bench" / "smollm2",
                    help="where the bundled SmolLM2 is converted once and reused")
    ap.add_argument("--json", type=Path, default=ROOT / "metrics" / "bench.json")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table (with the machine) here")
    return ap.parse_args(argv)


def smollm2_dir(dest: Path) -> Path:
    """SmolLM2-135M-Instruct from the bundled GGUF as a plain HF folder (what the download stage writes)."""
    if (dest / "config.json").is_file() and list(dest.glob("*.safetensors")):
        return dest
    from lmtune.models import loading

    model, tok = loading.smollm2()
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def markdown(rows: list[Row], info: dict, wall: float, argv_note: str) -> str:
    return "\n".join([
        "# Benchmark results", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info.get('ram_gb', '?')} GB RAM, CUDA: {info['cuda']}; "
        f"torch {info['torch']} ({info['torch_threads']} threads), transformers {info['transformers']}, Python {info['python']}.",
        f"Command: `{argv_note}`; whole run {wall / 60:.1f} min. Ratio > 1 means ours is faster.",
        f"Load average (1, 5, 15 min) at start {info['load_average_at_start']}, at end {info['load_average_at_end']} "
        f"(ratios compare figures measured in the same run, interleaved where the notes say so).", "",
        table(rows), "",
    ])


def _chunk(args, work, models):
    from bench import chunk

    return chunk.bench(work, int(args.chunk_tokens), int(args.chunk_large_tokens), args.block_size,
                       args.chunk_repeats, args.chunk_sum_repeats)


def _tokenize(args, work, models):
    from bench import tokenize

    return tokenize.bench(work, models.smol, args.synthetic_mb, args.tokenize_batch, args.repeats, args.synthetic_repeats)


def _train(args, work, models):
    from bench import train

    peak = train.matmul_peak()
    rows = train.bench_model("tiny GPT-2", models.gpt2, args.block_size, args.gpt2_batch, args.gpt2_steps,
                             args.repeats, peak, work)
    if args.smollm2_steps:
        rows += train.bench_model("SmolLM2-135M", models.smol, args.smollm2_block, args.smollm2_batch,
                                  args.smollm2_steps, args.repeats, peak, work, tuned_repeats=args.tuned_repeats)
    return rows


def _evaluate(args, work, models):
    from bench import evaluate

    # Tiny GPT-2 evaluates in ~1 s, so one process per side with `repeats` timed runs; SmolLM2's
    # ~4 s evaluations vary more between processes than within one, so one timed run per process.
    return evaluate.bench_model(
        "tiny GPT-2", models.gpt2, args.block_size, 4 * args.eval_blocks, args.eval_batch, args.repeats, work,
    ) + evaluate.bench_model(
        "SmolLM2-135M", models.smol, args.block_size, args.eval_blocks, args.eval_batch, 1, work,
        processes=args.eval_processes, tuned_processes=1 if args.tuned_repeats > 0 else 0,
    )


def _memory(args, work, models):
    from bench import memory

    def parse(text):
        return [tuple(int(x) for x in s.split("x")) for s in text.split(",")]

    shapes = parse(args.memory_shapes)
    which = args.memory_models.split(",")
    rows = []
    if "tiny" in which:
        long_gpt2 = memory.tiny_gpt2_long(work / "gpt2-1024")
        rows += memory.bench_model("tiny GPT-2", long_gpt2, shapes, max(3, args.memory_steps), args.memory_repeats, work)
        rows.append(memory.bench_sharded("tiny GPT-2", long_gpt2, *shapes[0], max(3, args.memory_steps), work))
    if "smollm2" in which:
        rows += memory.bench_model("SmolLM2-135M", models.smol, parse(args.memory_smollm2_shapes),
                                   max(3, args.memory_smollm2_steps), 1, work)
    return rows


def _dvc(args, work, models):
    from bench import dvcrepro

    return dvcrepro.bench(work, args.repeats, args.lr_changes)


RUNNERS = {"chunk": _chunk, "tokenize": _tokenize, "train": _train, "evaluate": _evaluate, "memory": _memory,
           "dvc": _dvc}


class Models:
    """The models the rows share, built on first use: the tiny GPT-2 and the converted SmolLM2."""

    def __init__(self, args, work: Path):
        self.args, self.work = args, work

    @functools.cached_property
    def gpt2(self) -> Path:
        from bench import train

        return train.tiny_gpt2(self.work / "gpt2")

    @functools.cached_property
    def smol(self) -> Path:
        return smollm2_dir(self.args.smollm2_dir)


def run_rows(args, wanted: list[str]) -> list[Row]:
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="lmtune-bench-"))
    try:
        models = Models(args, work)
        for name in ROWS:
            if name in wanted:
                t = time.perf_counter()
                new = RUNNERS[name](args, work, models)
                rows.extend(new)
                print(f"\n[{name}: {time.perf_counter() - t:.0f} s]\n{table(new)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # GBs of generated data
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)}; choose from {ROWS}")
    # A kill (SIGTERM) still runs run_rows' cleanup: the temp dir holds GBs of generated data.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    info = machine()
    info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    print(f"bench on {info['cpu']} ({info['cores']} cores, {info.get('ram_gb')} GB), rows: {wanted}", flush=True)
    rows = run_rows(args, wanted)
    wall = time.perf_counter() - started
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\n## All rows ({wall / 60:.1f} min)\n\n{table(rows)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": info, "wall_s": round(wall, 1), "args": {k: str(v) for k, v in vars(args).items()},
                                     "rows": to_json(rows)}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(rows, info, wall, "python -m bench " + " ".join(sys.argv[1:])), encoding="utf-8")
    print(f"wrote {args.json}" + (f" and {args.markdown}" if args.markdown else ""))


if __name__ == "__main__":
    main()
