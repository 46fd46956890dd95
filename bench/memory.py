"""Memory rows: the train stage's peak-memory estimate (lmtune.train.estimate) against the measured peak.

Each shape runs in a fresh process that does what stages/train.py does: tune the allocator, load the
model from its folder, estimate with the preflight's own functions at the point the stage calls them,
then train `steps` optimizer steps with lmtune.train.trainer.train (the peak comes in step 2, the first with
AdamW's state) and read the process's peak resident memory (VmHWM), or the CUDA allocator's peak:

    python -m bench.memory MODEL_DIR BATCH BLOCK STEPS WORK_DIR [CHECKPOINTING]

Blocks are seeded random token ids: memory depends on the shapes, not on the text.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ENV, ROOT, Row, emit, median, worker

# Targets from issue 14: within +-25% of the measured peak, and never below it by more than 10%.
WITHIN = 0.25
BELOW = 0.10


def within_target(estimate_mb: float, measured_mb: float) -> bool:
    ratio = estimate_mb / measured_mb
    return 1 - min(WITHIN, BELOW) <= ratio <= 1 + WITHIN


def measure(model_dir: Path, batch: int, block: int, steps: int, work: Path, checkpointing: bool = False) -> dict:
    """In this (fresh) process: the estimate, then `steps` real steps and their peak."""
    from lmtune import allocator

    tuned = allocator.tune_cpu_allocator()  # first, as stages/train.py does
    import datasets
    import numpy as np
    import torch
    import transformers
    from transformers import AutoTokenizer

    from lmtune import params, tasks
    from lmtune.train import estimate, limits, sharding
    from lmtune.train import trainer

    transformers.logging.set_verbosity_error()
    p = params.load()
    tp = p.train.model_copy(update={
        "max_steps": steps, "batch_size": batch, "gradient_accumulation_steps": 1, "auto_batch_size": False,
        "save_steps": 10**6, "eval_steps": 0, "early_stopping_patience": 0, "logging_steps": 1,
        "gradient_checkpointing": checkpointing,
    })
    tok = AutoTokenizer.from_pretrained(model_dir)
    from lmtune.models import loading

    model = loading.load_model(model_dir, tasks.get("causal_lm").head, p.seed)
    vocab = model.config.vocab_size
    ids = np.random.default_rng(0).integers(0, vocab, size=(batch * steps, block), dtype=np.int64).astype(np.uint32)
    blocks = datasets.Dataset.from_dict({"input_ids": ids}).with_format("numpy")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    autocast = trainer.training_autocast_dtype(tp.precision, device)
    # The stage's preflight, term by term (the chunked loss's logits term where the Trainer will chunk it).
    prof = estimate.profile(model, blocks[0], trainer.collate_blocks, device, autocast,
                            trainer.loss_chunk_rows(model, tp, len(blocks)))
    base = estimate.weight_bytes(model) if cuda else limits.rss()
    est = estimate.estimate(prof, batch, base, estimate.trainable_bytes(model), checkpointing, tuned and not cuda)
    # Under FSDP / ZeRO (bench_sharded): one process's share, as lmtune.train.plan.preflight takes it.
    est = sharding.per_process(est, sharding.sharding(os.environ), estimate.weight_bytes(model),
                               sharding.gathered_bytes(model), cuda)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        trainer.train(model, tok, blocks, None, tp, p.seed, Path(tmp) / "ckpt", "bench")
    peak = torch.cuda.max_memory_allocated() if cuda else limits.peak_rss()
    return {"estimate_mb": est.total / limits.MB, "measured_mb": peak / limits.MB, "device": device,
            "parts_mb": {k: getattr(est, k) / limits.MB for k in ("base", "gradients", "optimizer", "activations", "logits", "heap")}}


def bench_model(label: str, model_dir: Path, shapes: list[tuple[int, int]], steps: int, repeats: int, work: Path) -> list[Row]:
    """One row per shape: the estimate against the median measured peak of `repeats` fresh runs."""
    rows = []
    for batch, block in shapes:
        runs = [worker("memory", model_dir, batch, block, steps, work) for _ in range(repeats)]
        est = median([r["estimate_mb"] for r in runs])
        measured = [r["measured_mb"] for r in runs]
        meas = median(measured)
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in runs[-1]["parts_mb"].items())
        how = "CUDA max_memory_allocated" if runs[0]["device"] == "cuda" else "peak RSS (VmHWM)"
        rows.append(Row(
            f"memory estimate {label}, batch {batch}×{block:,}", est, meas, "MB", est / meas,
            f"within ±{WITHIN:.0%} of measured, never > {BELOW:.0%} below", within_target(est, meas),
            note=(f"ours = the train stage's preflight estimate; baseline column = the measured {how} of {steps} "
                  f"training steps as stages/train.py runs them, median of {repeats} fresh process(es) "
                  f"({' / '.join(f'{m:,.0f}' for m in measured)} MB; with lmtune.allocator's tuning the heap keeps "
                  f"a varying number of logits-sized holes, lmtune/train/estimate.py); ratio = estimate / measured; "
                  f"estimate parts (MB): {parts}"),
            extra={"runs": runs},
        ))
    return rows


def bench_sharded(label: str, model_dir: Path, batch: int, block: int, steps: int, work: Path,
                  config: str = "configs/accelerate/fsdp2.yaml", processes: int = 2) -> Row:
    """The per-process estimate under FSDP2 against the measured peaks of a `processes`-process run (CPU, gloo),
    and the same shape in one process in the same run (the sharded terms' saving is what the 1-process
    estimate minus the sharded one shows)."""
    out = Path(tempfile.mkdtemp(prefix="sharded-", dir=work))
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(ROOT / config),
           "--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", "1", "-m", "bench.memory", model_dir, batch, block, steps, work, "0", out]
    proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, text=True, capture_output=True, env={**os.environ, **ENV})
    if proc.returncode != 0:
        raise RuntimeError(f"sharded memory run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    ranks = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(out.glob("rank-*.json"))]
    assert len(ranks) == processes, ranks
    single = worker("memory", model_dir, batch, block, steps, work)
    est, meas = ranks[0]["estimate_mb"], max(r["measured_mb"] for r in ranks)
    parts = ", ".join(f"{k} {v:,.0f}" for k, v in ranks[0]["parts_mb"].items())
    peaks = " / ".join(f"{r['measured_mb']:,.0f}" for r in ranks)
    return Row(
        f"memory estimate {label}, FSDP2 {processes} CPU processes, batch {batch}×{block:,} each", est, meas, "MB",
        est / meas, f"within ±{WITHIN:.0%} of measured, never > {BELOW:.0%} below", within_target(est, meas),
        note=(f"ours = one process's preflight estimate under {config} (lmtune/train/sharding.py: gradients and AdamW "
              f"state / {processes}, + the gathered root unit and largest layer); baseline column = the larger measured "
              f"peak RSS of the {processes} processes ({peaks} MB, "
              f"{steps} steps); the same shape in 1 process, same run: estimate {single['estimate_mb']:,.0f} MB, measured "
              f"{single['measured_mb']:,.0f} MB; estimate parts (MB): {parts}"),
        extra={"ranks": ranks, "single": single},
    )


def tiny_gpt2_long(dest: Path) -> Path:
    """params.yaml's tiny GPT-2 shape with 1,024 positions (the 1 x 1,024 row needs them)."""
    from bench.train import tiny_gpt2

    return tiny_gpt2(dest, n_positions=1024)


if __name__ == "__main__":
    model_dir, batch, block, steps, work, *rest = sys.argv[1:]
    result = measure(Path(model_dir), int(batch), int(block), int(steps), Path(work), bool(rest and rest[0] == "1"))
    if len(rest) > 1:  # under accelerate launch (bench_sharded): one file per process
        Path(rest[1], f"rank-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(result), encoding="utf-8")
    else:
        emit(result)
