"""`make gpu-check`: the pipeline's model stages and its training/evaluation speed on one CUDA GPU.

One prepared script, sized for ≤ 6 minutes on one H100 (a 355 s budget; what does not fit is recorded as skipped) (bench/README.md says how to run it on a machine
without a package registry). It writes bench/GPU_RESULTS.md (and a copy to $OUT when that is set)
after every section, so a failure or a kill keeps what was measured before it. Sections, cheap first:

1. The machine: GPU, versions, and the measured bf16 matmul peak (8192³, the MFU denominator).
2. The tiny pipeline (recipes/tiny.yaml at 64 wide: GPT-2 from config on fixture text) in a temp copy of the repo, every
   stage of dvc.yaml in order as its `python -m stages.NAME` (no DVC there) under bench/gpu_probe.py, which records the device
   and autocast dtype every layer's forward really ran with. With `train.precision: auto` (bf16), then
   evaluate again with `fp32`; checks: the model stages ran on the GPU in bf16, generations exist and ran
   on the GPU, and the bf16 perplexity is within PPL_BOUND (bench/gpu_pipeline.py) of the fp32 one.
3. The train stage's GPU-only paths (bench/gpu_cuda_paths.py): the real TrainingArguments in bf16 on CUDA, the
   memory preflight's limit and estimate against torch.cuda.max_memory_allocated (±25%), and the trained model
   evaluated on CUDA and on the CPU (perplexity within 1e-2).
4. Training throughput of GPT-2 124M (from config) at 8 × 1,024 random token ids, each variant in its own
   process: the plain HF Trainer (defaults; bf16) against the project's path
   (lmtune.train.trainer.training_arguments + FiniteLossTrainer + collate_blocks) with SDPA vs eager attention,
   fused AdamW on/off, and torch.compile (last: the slowest to start).
5. Evaluation throughput: lmtune.eval.metrics.evaluate_causal_lm on the device under the placement's autocast
   against Trainer.evaluate, on the same blocks.
6. The default params (bench/gpu_mfu.py): GPT-2 124M through lmtune.train.trainer with params.yaml's train
   section as a user gets it, resolved for a short and for a long run (torch_compile auto), tokens/s and MFU.

Modules: bench/gpu_common.py (shapes, results file, budget, workers), gpu_workers.py (the timed work, one
process each), gpu_sections.py (machine, train and evaluate throughput), gpu_pipeline.py (the tiny pipeline),
gpu_cuda_paths.py (3), gpu_probe.py (where each layer ran).

Exit codes: 0 all checks passed, 1 a check failed or a section/variant raised (the file says which),
2 no CUDA GPU (one line, nothing run). LMTUNE_GPU_CHECK_ON_CPU=1 runs the same code on the CPU with tiny
shapes and `bf16` (CPU autocast) in place of `auto`: a debug run of the script itself, not a result.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.gpu_common import ENV, ON_CPU, ROOT, SHAPES, Budget, Report, _one_line
from bench.gpu_cuda_paths import cuda_paths_section, cuda_paths_worker
from bench.gpu_mfu import defaults_section
from bench.gpu_pipeline import pipeline_section
from bench.gpu_sections import eval_section, machine_section, train_section
from bench.gpu_workers import eval_worker, train_worker

SECTIONS = "machine,pipeline,train,eval,cuda_paths,defaults"


def section(rep: Report, name: str, fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the other sections still run
        rep.problem(f"{name}: {_one_line(e)}")
        rep.set(f"error {name}", f"## {name}: error\n\n```\n{traceback.format_exc()[-3000:]}\n```")
        return None


def _arguments(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="results file (default: bench/GPU_RESULTS.md; CPU debug: a temp dir)")
    ap.add_argument("--sections", default=SECTIONS,
                    help=f"comma-separated subset of {SECTIONS} (default: all; train needs machine's matmul peak)")
    ap.add_argument("--worker", choices=["train", "eval", "cuda_paths"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run_worker(a) -> int:
    os.environ.update(ENV)
    work = {"train": lambda: train_worker(a.variant, a.work), "eval": lambda: eval_worker(a.work),
            "cuda_paths": lambda: cuda_paths_worker(a.work)}[a.worker]
    print(json.dumps(work()), flush=True)
    return 0


def run_sections(rep: Report, wanted: set[str]) -> None:
    budget = Budget(SHAPES.budget_s)
    results: dict = {}
    peak = None
    steps = [
        ("machine", "machine", lambda: machine_section(rep)),
        ("pipeline", "tiny pipeline", lambda: pipeline_section(rep, budget)),
        ("cuda_paths", "GPU-only paths", lambda: cuda_paths_section(rep, budget)),
        ("train", "training throughput", lambda: peak and train_section(rep, budget, peak, False, results)),
        ("eval", "evaluation throughput", lambda: eval_section(rep, budget)),
        ("defaults", "default params (MFU)", lambda: defaults_section(rep, budget)),
        # torch.compile last: the slowest to start, so the budget cuts it before anything else.
        ("train", "training throughput (compile)", lambda: peak and train_section(rep, budget, peak, True, results)),
    ]
    for key, name, fn in steps:
        if key in wanted:
            value = section(rep, name, fn)
            if key == "machine":
                peak = value
            print(f"gpu-check: {name} done ({time.monotonic() - rep.started:.0f} s)", flush=True)


def main(argv=None) -> int:
    a = _arguments(argv)
    import torch

    if not torch.cuda.is_available() and not ON_CPU:
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__} sees none); this check needs one, "
              "nothing was run", file=sys.stderr)
        return 2
    if a.worker:
        return run_worker(a)
    out = a.out or (Path(tempfile.mkdtemp(prefix="gpu-check-cpu-")) / "GPU_RESULTS.md" if ON_CPU
                    else ROOT / "bench" / "GPU_RESULTS.md")
    rep = Report(out)
    print(f"gpu-check: writing {out}", flush=True)
    run_sections(rep, set(a.sections.split(",")))
    rep.write()
    print(Path(out).read_text(encoding="utf-8"))
    verdict = f"{len(rep.problems)} problem(s)" if rep.problems else "all checks passed"
    print(f"gpu-check: {verdict} in {time.monotonic() - rep.started:.0f} s; results in {out}", flush=True)
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
