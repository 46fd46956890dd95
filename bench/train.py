"""Train-step rows: the train stage's loop (lmtune.train.trainer.train) vs a plain HF Trainer, same blocks.

The baseline is what the seed notebooks do: TrainingArguments defaults (+ the same learning rate,
batch size, steps and seed) and DataCollatorForLanguageModeling(mlm=False) over plain-list blocks.
Throughput is tokens per optimizer step over the median step time (the interval between
consecutive on_step_end callbacks, first step excluded as warm-up): it covers data loading,
collation, forward, backward, optimizer and logging, and excludes the end-of-run checkpoint both
sides write. Achieved FLOP/s = 6 x parameters x tokens/s, against a matmul peak measured here.

Each run is a fresh process (so one side's memory state never carries into the other's):
    python -m bench.train SIDE MODEL_DIR BLOCK_SIZE BATCH_SIZE STEPS WORK_DIR
SIDE: ours (the stage: lmtune.allocator tuning + trainer.train), baseline (a plain Trainer, as the
seeds run it), baseline_tuned (the plain Trainer in a process with the same allocator tuning: shows
how much of the difference is the allocator and how much the training loop).
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import SIDES, Row, emit, median, tune_for, tuned_row, worker


def matmul_peak(n: int = 1024, repeats: int = 10) -> float:
    """fp32 FLOP/s of torch.mm (n x n) on all torch threads: the best of `repeats` after a warm-up."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class StepTimer:
    """Appended to every Trainer built while installed: wall time at each optimizer step's end."""

    def __init__(self):
        import transformers

        self.times: list[float] = []
        timer = self

        class _CB(transformers.TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                timer.times = [time.perf_counter()]

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter())

        self.callback = _CB()
        self._orig = transformers.Trainer.__init__

        def init(trainer, *a, **kw):
            self._orig(trainer, *a, **kw)
            trainer.add_callback(self.callback)

        transformers.Trainer.__init__ = init

    def step_seconds(self) -> float:
        """Median step interval, the first (warm-up) step excluded."""
        d = np.diff(self.times)
        return float(np.median(d[1:] if len(d) > 1 else d))

    def close(self):
        import transformers

        transformers.Trainer.__init__ = self._orig


def make_blocks(tok_dir: Path, block_size: int, n_blocks: int):
    """The first n_blocks blocks of SOTU, tokenized and cut as the tokenize + chunk stages do."""
    import datasets
    from transformers import AutoTokenizer

    from lmtune.data import chunking
    from lmtune.data import sources
    from lmtune.data import text

    tok = AutoTokenizer.from_pretrained(tok_dir)
    texts, ids, total = sources.sotu_dataset()["text"], [], 0
    for t in texts:
        ids.extend(text.tokenize_texts(tok, [t], tok.eos_token_id, text.token_dtype(len(tok))))
        total += len(ids[-1])
        if total >= (n_blocks + 1) * block_size:
            break
    return datasets.Dataset(chunking.blocks_table(chunking.group_blocks(np.concatenate(ids), block_size)[:n_blocks]))


def ours(model_dir: Path, blocks, block_size: int, batch_size: int, steps: int, timer: StepTimer, work: Path) -> float:
    """lmtune.train.trainer.train as stages/train.py calls it; the params are params.yaml's train section."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune import params
    from lmtune.train import trainer

    tp = params.load().train.model_copy(update={
        "max_steps": steps, "batch_size": batch_size, "gradient_accumulation_steps": 1,
        "save_steps": 10**6, "eval_steps": 0, "early_stopping_patience": 0,
    })
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        trainer.train(model, tok, blocks.with_format("numpy"), None, tp, params.load().seed,
                       Path(tmp) / "ckpt", "bench")
    return timer.step_seconds()


def baseline(model_dir: Path, blocks, block_size: int, batch_size: int, steps: int, timer: StepTimer, work: Path) -> float:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune import params

    p = params.load()
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch_size, max_steps=steps,
            learning_rate=p.train.learning_rate, seed=p.seed, report_to="none",
            save_strategy="no",  # its end-of-run checkpoint is outside the timed steps anyway; saves wall time
        )
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=blocks.with_format(None),
            data_collator=transformers.DataCollatorForLanguageModeling(tok, mlm=False), processing_class=tok,
        )
        trainer.train()
    return timer.step_seconds()


def run_side(side: str, model_dir: Path, block_size: int, batch_size: int, steps: int, work: Path) -> float:
    """One run of one side in this (fresh) process: its median step time."""
    import transformers

    tune_for(side)  # first thing, as stages/train.py does
    transformers.logging.set_verbosity_error()
    blocks = make_blocks(model_dir, block_size, batch_size * steps)
    timer = StepTimer()
    try:
        return (ours if side == "ours" else baseline)(model_dir, blocks, block_size, batch_size, steps, timer, work)
    finally:
        timer.close()


def bench_model(label: str, model_dir: Path, block_size: int, batch_size: int, steps: int, repeats: int,
                peak: float, work: Path, tuned_repeats: int = 0) -> list[Row]:
    """The train-step row (ours vs the plain Trainer), and with tuned_repeats > 0 an informational row
    against the plain Trainer given the same allocator tuning."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):  # shapes only: the parameter count without loading weights
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).parameters())
    tokens_per_step = batch_size * block_size
    runs = {side: [] for side in SIDES}
    # Interleaved, and the order rotates so that no side always runs first or last.
    plan = [(side, repeats) for side in ("ours", "baseline")] + ([("baseline_tuned", tuned_repeats)] if tuned_repeats else [])
    for i in range(max(n for _, n in plan)):
        sides = [side for side, n in plan if i < n]
        for side in sides[i % len(sides):] + sides[: i % len(sides)]:
            runs[side].append(worker("train", side, model_dir, block_size, batch_size, steps, work)["step_s"])
    o, b, bt = runs["ours"], runs["baseline"], runs["baseline_tuned"]
    ours_tps, base_tps = tokens_per_step / median(o), tokens_per_step / median(b)
    flops = 6 * n_params * ours_tps
    ratio = ours_tps / base_tps
    name = f"train step {label} ({n_params / 1e6:.1f}M params, batch {batch_size}×{block_size})"
    rows = [Row(
        name, ours_tps, base_tps, "tokens/s", ratio, "≥ 1.0×", ratio >= 1.0,
        note=(f"achieved {flops / 1e9:.1f} GFLOP/s (6·N·tokens/s) = {flops / peak:.0%} of the measured fp32 matmul peak "
              f"{peak / 1e9:.0f} GFLOP/s (baseline {6 * n_params * base_tps / peak:.0%}); seconds per step, ours "
              f"{'/'.join(f'{t:.2f}' for t in o)} vs baseline {'/'.join(f'{t:.2f}' for t in b)}; median step of {steps} steps "
              f"(first excluded), median of {repeats} runs each, every run a fresh process; ours = the stage, which "
              f"sets lmtune.allocator's malloc tuning; the baseline runs as the seeds do, without it"),
        extra={"ours_step_s": o, "baseline_step_s": b, "params": n_params, "achieved_flops": flops,
               "matmul_peak_flops": peak, "fraction_of_peak": flops / peak},
    )]
    if bt:
        rows.append(tuned_row(name, "the plain Trainer", ours_tps, tokens_per_step / median(bt), base_tps, len(bt),
                              {"baseline_tuned_step_s": bt}))
    return rows


def tiny_gpt2(dest: Path, n_positions: int | None = None) -> Path:
    """A fresh GPT-2 of params.yaml's model.gpt2 shape (optionally with more positions) with GPT-2's real
    BPE, saved like models/base."""
    from lmtune import params
    from lmtune.models import loading

    p = params.load()
    arch = p.model.gpt2 if n_positions is None else p.model.gpt2.model_copy(update={"n_positions": n_positions})
    model, tok = loading.gpt2_from_config(arch, p.seed)
    tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


if __name__ == "__main__":
    side, model_dir, block_size, batch_size, steps, work = sys.argv[1:]
    emit({"step_s": run_side(side, Path(model_dir), int(block_size), int(batch_size), int(steps), Path(work))})
