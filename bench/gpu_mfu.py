"""The default-params row of `make gpu-check` (issue 23): GPT-2 124M trained through lmtune.train.trainer with
params.yaml's train section as a user gets it (no flags), its tokens/s and MFU against the measured bf16 matmul
peak. Two rows, because `train.torch_compile: auto` depends on the run's length (lmtune.train.hardware): the
defaults as resolved for this short timing run, and as resolved for a run of COMPILE_MIN_STEPS steps or more.

bench/gpu_check.py runs it as its `defaults` section (`defaults_section`: this module in its own process, within
the check's time budget). Alone:

    python -m bench.gpu_mfu [WORK_DIR]        # one CUDA GPU; on a CPU a tiny shape checks that it runs

Not yet run on a GPU: written on a CPU-only machine (a CPU run checks only that it runs; its MFU is not reported).
"""
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench.gpu_common import flops_per_token
from bench.gpu_sections import _matmul_peak
from bench.gpu_workers import _step_timer


@dataclasses.dataclass(frozen=True)
class Shape:
    layers: int = 12
    heads: int = 12
    embd: int = 768
    vocab: int = 50257
    seq: int = 1024
    batch: int = 8
    warmup: int = 5
    timed: int = 30


GPU = Shape()
CPU = Shape(layers=2, heads=2, embd=64, seq=64, batch=2, warmup=1, timed=3)  # only checks that it runs


def train_defaults(work: Path, shape: Shape, long_run: bool) -> dict:
    """Median step of trainer.train's Trainer with params.yaml's train section (batch, steps set by `shape`).
    long_run: resolve torch_compile auto as for a run of COMPILE_MIN_STEPS steps (timing still `shape`'s)."""
    import numpy as np
    import torch
    import transformers

    from lmtune import params
    from lmtune.data import chunking
    from lmtune.train import hardware, trainer

    transformers.logging.set_verbosity_error()
    steps = shape.warmup + shape.timed
    cfg = transformers.GPT2Config(vocab_size=shape.vocab, n_positions=shape.seq, n_embd=shape.embd,
                                  n_layer=shape.layers, n_head=shape.heads)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    ids = np.random.default_rng(0).integers(0, shape.vocab, size=(steps * shape.batch, shape.seq)).astype(np.uint16)
    import datasets

    blocks = datasets.Dataset(chunking.blocks_table(ids)).with_format("numpy")
    tp = params.load().train.model_copy(update={"max_steps": steps, "batch_size": shape.batch,
                                                "gradient_accumulation_steps": 1})
    planned = max(steps, hardware.COMPILE_MIN_STEPS) if long_run else steps
    args = dataclasses.replace(trainer.training_arguments(tp, 0, work / f"defaults-{long_run}", planned),
                               save_strategy="no")
    times: list[float] = []
    t = trainer.FiniteLossTrainer(model=model, args=args, train_dataset=blocks, data_collator=trainer.collate_blocks,
                                  callbacks=[_step_timer(times)])
    t.train()
    step = float(statistics.median(np.diff(times)[shape.warmup:]))
    n_params = sum(p.numel() for p in model.parameters())
    return {"step_s": step, "tokens_per_s": shape.batch * shape.seq / step,
            "flops_per_token": flops_per_token(n_params, model.transformer.wpe.weight.numel(), shape.layers,
                                               shape.embd, shape.seq),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "torch_compile": bool(args.torch_compile), "lm_loss": t.lm_loss(), "optim": str(args.optim)}


def rows(work: Path) -> list[str]:
    """Markdown lines: the default-params rows with tokens/s and MFU (GPU), or a run check (CPU)."""
    import torch

    cuda = torch.cuda.is_available()
    shape = GPU if cuda else CPU
    peak = _matmul_peak(8192, 50) if cuda else None  # the 8192³ bf16 peak gpu_check's machine section measures
    out = ["| default params as resolved | precision | compile | loss | ms/step | tokens/s | MFU |", "|---|---|---|---|---|---|---|"]
    for long_run in (False, True):
        r = train_defaults(work, shape, long_run)
        mfu = f"{r['flops_per_token'] * r['tokens_per_s'] / peak:.1%}" if peak else "not measured (CPU)"
        what = f"for a {'≥ 2,000' if long_run else str(shape.warmup + shape.timed)}-step run"
        out.append(f"| {what} | {r['precision']} | {r['torch_compile']} | {r['lm_loss']} | {r['step_s'] * 1e3:.1f} | "
                   f"{r['tokens_per_s']:,.0f} | {mfu} |")
    if peak:
        out.append(f"\nMFU = (6·N + 12·L·d·T) × tokens/s ÷ the measured bf16 matmul peak ({peak / 1e12:.1f} TFLOP/s); "
                   f"GPT-2 {shape.layers}×{shape.embd}, {shape.batch} × {shape.seq:,} tokens per step, "
                   f"median of {shape.timed} steps after {shape.warmup}.")
    return out


def defaults_section(rep, budget, wanted_s: int = 240) -> None:
    """gpu_check's `defaults` section: `python -m bench.gpu_mfu` in a fresh process within `budget`; its table
    goes into the report, a failure (exit code, kill, or skip for lack of time) into its problems."""
    from bench.gpu_common import _env, run_module

    with tempfile.TemporaryDirectory() as tmp:
        rc, out, err = run_module(budget, wanted_s, ["bench.gpu_mfu", tmp], _env())
    lines = out.strip().splitlines()
    if rc != 0 or not lines:
        tail = (err.strip().splitlines() or [f"exit {rc}"])[-1]
        rep.problem(f"default params: {tail if rc in ('skipped', 'timeout') else f'exit {rc}: {tail}'}"[:300])
        return
    rep.set("defaults", "## Default params: tokens/s and MFU (bench/gpu_mfu.py)\n\n" + "\n".join(lines[:-1]))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)
        lines = rows(work)
        print("\n".join(lines))
        print(json.dumps({"lines": len(lines)}))
