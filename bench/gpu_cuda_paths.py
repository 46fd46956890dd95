"""`make gpu-check`'s section for the train stage's GPU-only paths, which the CPU tests cannot reach (issue 25, item 11):

1. `lmtune.train.trainer.training_arguments` builds the real transformers `TrainingArguments` (the unit tests
   replace the class) with `train.precision: auto`: on CUDA that must be bf16 on the GPU with fused AdamW.
2. The memory preflight on CUDA: its limit (free GPU memory + what torch holds) must lie between the measured
   peak and the GPU's total memory, and its estimate of a step's peak must be within ±25% of
   `torch.cuda.max_memory_allocated` over real steps of the same Trainer (bench/memory.py does the same
   against peak RSS on the CPU).
3. The trained model evaluated by `lmtune.eval.metrics.evaluate_causal_lm` on the GPU (the evaluate stage's
   placement: bf16 autocast) and on the CPU in fp32: perplexities within 1e-2 of each other (relative; the
   bf16 rounding argument in bench/gpu_pipeline.py bounds it by ~1%).

The CPU debug run (LMTUNE_GPU_CHECK_ON_CPU=1) runs the same code with bf16 CPU autocast on the "device" side
and peak RSS in place of max_memory_allocated: a test of the script, not a result.
"""
import dataclasses
from pathlib import Path

from bench.gpu_common import ON_CPU, SHAPES, Budget, Report, _device, _md, in_worker
from bench.gpu_workers import _gpt2, _random_blocks

MEMORY_TOLERANCE = 0.25   # the preflight's target (bench/README.md's memory row)
EVAL_TOLERANCE = 1e-2
STEPS = 3
EVAL_BLOCKS = 8           # scored on the CPU too: 8 × 1,024 tokens of GPT-2 124M is ~2 TFLOP there


def _planner():
    """The train stage's preflight module: lmtune.train.plan once memory.py is split by concern (issue 20),
    lmtune.train.memory before."""
    try:
        from lmtune.train import plan
    except ImportError:
        from lmtune.train import memory as plan
    return plan


def _peak_measured() -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    try:
        from lmtune.train.limits import peak_rss
    except ImportError:
        from lmtune.train.memory import peak_rss
    return peak_rss() / 2**20, "peak RSS (CPU debug run)"


def _train_params(out: Path):
    from lmtune import params

    return params.load().train.model_copy(update={
        "max_steps": STEPS, "batch_size": SHAPES.batch, "gradient_accumulation_steps": 1, "eval_steps": 0,
        "early_stopping_patience": 0, "precision": SHAPES.precision, "torch_compile": False,
        "gradient_checkpointing": False, "auto_batch_size": False, "save_steps": STEPS,
    })


def arguments_check(args, dev: str) -> dict:
    import transformers

    real = type(args) is transformers.TrainingArguments
    optim = str(getattr(args.optim, "value", args.optim))
    ok = real and args.bf16 and not args.fp16 and args.device.type == dev and (dev != "cuda" or optim == "adamw_torch_fused")
    return {"ok": bool(ok), "detail": f"{type(args).__module__}.{type(args).__name__}: bf16 {args.bf16}, fp16 {args.fp16}, "
                                      f"device {args.device}, optim {optim}"}


def memory_check(plan, measured_mb: float, source: str, total_mb: float | None) -> dict:
    rel = (plan.estimate_mb - measured_mb) / measured_mb
    limit_ok = plan.limit_mb is None or (measured_mb <= plan.limit_mb and (total_mb is None or plan.limit_mb <= total_mb * 1.001))
    return {"ok": bool(abs(rel) <= MEMORY_TOLERANCE and limit_ok),
            "detail": f"estimate {plan.estimate_mb:,.0f} MB vs {source} {measured_mb:,.0f} MB ({rel:+.1%}); "
                      f"limit {plan.limit_mb or 0:,.0f} MB" + (f", device total {total_mb:,.0f} MB" if total_mb else "")}


def eval_check(saved: Path, placement) -> dict:
    """The saved model loaded fresh on each side, as the evaluate stage loads models/final. (Not the Trainer's
    own model: accelerate wraps its forward in the training autocast, and a copy would carry that along.)"""
    from transformers import AutoModelForCausalLM

    from lmtune.eval import metrics

    blocks = _random_blocks(EVAL_BLOCKS).with_format("torch")
    on_dev = metrics.evaluate_causal_lm(AutoModelForCausalLM.from_pretrained(saved).to(placement.device), blocks,
                                        SHAPES.eval_batch, autocast=placement.autocast)
    cpu = metrics.evaluate_causal_lm(AutoModelForCausalLM.from_pretrained(saved), blocks, SHAPES.eval_batch)
    rel = abs(on_dev["perplexity"] - cpu["perplexity"]) / cpu["perplexity"]
    return {"ok": bool(rel <= EVAL_TOLERANCE),
            "detail": f"perplexity {placement.device} ({placement.dtype or 'fp32'}) {on_dev['perplexity']:.4f} vs "
                      f"cpu fp32 {cpu['perplexity']:.4f}: relative difference {rel:.2e}; accuracy "
                      f"{on_dev['accuracy']:.4f} vs {cpu['accuracy']:.4f}"}


def cuda_paths_worker(work: Path) -> dict:
    """Runs in its own process (a fresh CUDA context, so max_memory_allocated is this run's alone)."""
    import torch
    import transformers

    from lmtune import device
    from lmtune.train import trainer as lm_trainer

    transformers.logging.set_verbosity_error()
    dev, placement = _device(), device.current(SHAPES.precision)
    tp = _train_params(work)
    args = lm_trainer.training_arguments(tp, 0, work / "train")
    checks = {"TrainingArguments (real class, train.precision " + SHAPES.precision + ")": arguments_check(args, dev)}
    model = _gpt2("sdpa")
    blocks = _random_blocks(STEPS * SHAPES.batch).with_format("numpy")
    plan = _planner().preflight(model, blocks[0], lm_trainer.collate_blocks, tp, False, placement.device, placement.dtype)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = lm_trainer.FiniteLossTrainer(model=model, args=dataclasses.replace(args, save_strategy="no"),
                                           train_dataset=blocks, data_collator=lm_trainer.collate_blocks)
    trainer.train()
    measured, source = _peak_measured()
    total = torch.cuda.get_device_properties(0).total_memory / 2**20 if torch.cuda.is_available() else None
    checks[f"memory preflight vs {source} (±{MEMORY_TOLERANCE:.0%})"] = memory_check(plan, measured, source, total)
    trainer.save_model(str(work / "final"))
    checks[f"evaluate on {placement.device} vs cpu (≤ {EVAL_TOLERANCE:g})"] = eval_check(work / "final", placement)
    return {"checks": checks}


def cuda_paths_section(rep: Report, budget: Budget) -> None:
    r = in_worker(rep, "GPU-only paths", budget, SHAPES.variant_timeout_s, "cuda_paths")
    if "error" in r:
        return
    s = SHAPES
    lines = [f"## The train stage's GPU-only paths: GPT-2 from config ({s.layers} layers, {s.embd} wide), "
             f"{STEPS} steps of {s.batch} × {s.seq:,} random token ids" + (" (CPU debug run)" if ON_CPU else ""), "",
             "| check | result | detail |", "|---|---|---|"]
    for name, c in r["checks"].items():
        lines.append(f"| {_md(name)} | {'PASS' if c['ok'] else '**FAIL**'} | {_md(c['detail'])} |")
        if not c["ok"]:
            rep.problem(f"check failed: {name} ({c['detail'][:200]})")
    rep.set("cuda_paths", "\n".join(lines))
