"""The measured work of `make gpu-check`'s throughput sections, each run in a fresh process
(`python -m bench.gpu_check --worker ...`) that prints one JSON line last: a variant that crashes the process or
the GPU context cannot take the others with it."""
import dataclasses
import statistics
import time
from pathlib import Path

from bench.gpu_common import ON_CPU, SHAPES, VARIANTS, _device, _one_line, _sync


def _gpt2(attn: str):
    """GPT-2 of SHAPES (124M on the GPU) from config, initialised on the device, seeded: same weights each time."""
    import torch
    import transformers

    s = SHAPES
    cfg = transformers.GPT2Config(vocab_size=s.vocab, n_positions=s.positions, n_embd=s.embd, n_layer=s.layers,
                                  n_head=s.heads)
    torch.manual_seed(0)
    with torch.device(_device()):
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    return model


def _random_blocks(n_blocks: int):
    """Random token ids cut into SHAPES.seq blocks, as the chunk stage stores them (uint16 fixed-size lists)."""
    import datasets
    import numpy as np

    from lmtune.data import chunking

    ids = np.random.default_rng(0).integers(0, SHAPES.vocab, size=(n_blocks, SHAPES.seq)).astype(np.uint16)
    return datasets.Dataset(chunking.blocks_table(ids))


def _peak_mb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else 0.0


def _step_timer(times: list[float]):
    """A Trainer callback that appends a synchronised timestamp at the start and after every step."""
    import transformers

    class StepTimer(transformers.TrainerCallback):
        # The Trainer's own step boundaries; synchronised, so a step's GPU work is inside its interval.
        def on_train_begin(self, args, state, control, **kw):
            _sync()
            times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            _sync()
            times.append(time.perf_counter())

    return StepTimer()


def _lmtune_trainer(v, model, blocks, steps: int, out: Path):
    """The train stage's path: trainer.training_arguments from params.yaml's train section, FiniteLossTrainer,
    collate_blocks."""
    from lmtune import params
    from lmtune.train import trainer as lm_trainer

    s = SHAPES
    tp = params.load().train.model_copy(update={
        "max_steps": steps, "batch_size": s.batch, "gradient_accumulation_steps": 1, "eval_steps": 0,
        "early_stopping_patience": 0, "precision": s.precision, "torch_compile": v.compile,
    })
    args = lm_trainer.training_arguments(tp, 0, out)
    # No checkpoints (a 124M model's save would only cost wall time; the stage's saves are not timed
    # here); `optim` as trainer.optimizer_name would give without a fused AdamW.
    args = dataclasses.replace(args, save_strategy="no", **({} if v.fused else {"optim": "adamw_torch"}))
    return lm_trainer.FiniteLossTrainer(model=model, args=args, train_dataset=blocks.with_format("numpy"),
                                        data_collator=lm_trainer.collate_blocks)


def _plain_trainer(v, model, blocks, steps: int, out: Path):
    """run_clm.py's way: a `labels` column = input_ids, default_data_collator, TrainingArguments defaults."""
    import transformers

    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=SHAPES.batch, max_steps=steps, learning_rate=1e-4, seed=0,
        report_to="none", save_strategy="no", disable_tqdm=True, bf16=v.bf16,
        use_cpu=ON_CPU,  # transformers refuses bf16 on a CPU unless told it is one; a GPU run passes False
    )
    ds = blocks.with_format(None).map(lambda b: {"labels": b["input_ids"]}, batched=True)
    return transformers.Trainer(model=model, args=args, train_dataset=ds, data_collator=transformers.default_data_collator)


def train_worker(name: str, work: Path) -> dict:
    import numpy as np
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    v = next(v for v in VARIANTS if v.name == name)
    steps = SHAPES.warmup + SHAPES.timed
    model = _gpt2(v.attn)
    blocks = _random_blocks(steps * SHAPES.batch)  # one epoch is exactly `steps` steps
    out = work / name.replace(" ", "_").replace(",", "")
    trainer = (_lmtune_trainer if v.side == "lmtune" else _plain_trainer)(v, model, blocks, steps, out)
    times: list[float] = []
    trainer.add_callback(_step_timer(times))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    intervals = np.diff(times)[SHAPES.warmup:]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    args = trainer.args
    return {
        "step_s": float(statistics.median(intervals)), "steps_timed": len(intervals),
        "step_s_min_max": [float(intervals.min()), float(intervals.max())],
        "params": sum(p.numel() for p in model.parameters()), "wpe": model.transformer.wpe.weight.numel(),
        "attn": model.config._attn_implementation, "optim": str(getattr(args.optim, "value", args.optim)),
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32", "compile": bool(args.torch_compile),
        "peak_mb": _peak_mb(), "last_loss": losses[-1] if losses else None, "device": str(args.device),
    }


def _ours(blocks, placement):
    """lmtune.eval.metrics.evaluate_causal_lm under `placement`, as lmtune.eval.evaluation.evaluate calls it."""
    from lmtune.eval import metrics

    def make():
        model = _gpt2("sdpa").to(placement.device)
        ds = blocks.with_format("torch")  # what the evaluate stage passes (loaded from data/chunks)
        return lambda: metrics.evaluate_causal_lm(model, ds, SHAPES.eval_batch, autocast=placement.autocast)["perplexity"]
    return make


def _trainer_evaluate(blocks, work: Path, bf16: bool):
    import math

    import transformers

    def make():
        args = transformers.TrainingArguments(output_dir=str(work / "eval"), per_device_eval_batch_size=SHAPES.eval_batch,
                                              report_to="none", disable_tqdm=True, bf16=bf16, use_cpu=ON_CPU)
        t = transformers.Trainer(
            model=_gpt2("sdpa"), args=args, data_collator=transformers.default_data_collator,
            eval_dataset=blocks.with_format(None).map(lambda b: {"labels": b["input_ids"]}, batched=True),
        )
        return lambda: math.exp(t.evaluate()["eval_loss"])
    return make


def _time_side(make) -> dict:
    """Median-ready timings of one side: a fresh model (same seed, same weights), one warm-up, then repeats."""
    once = make()
    once()  # warm-up: kernels, allocator, the Trainer's accelerate wrapping
    seconds, ppl = [], None
    for _ in range(SHAPES.eval_repeats):
        _sync()
        start = time.perf_counter()
        ppl = once()
        _sync()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "perplexity": ppl}


def eval_worker(work: Path) -> dict:
    import torch
    import transformers

    from lmtune import device
    from lmtune.device import Placement

    transformers.logging.set_verbosity_error()
    blocks = _random_blocks(SHAPES.eval_blocks)
    auto = device.current(SHAPES.precision)
    name = f"{auto.dtype}".removeprefix("torch.") if auto.dtype else "fp32"
    sides = [
        (f"lmtune evaluate_causal_lm ({name} autocast)", _ours(blocks, auto)),
        ("lmtune evaluate_causal_lm (fp32)", _ours(blocks, Placement(auto.device, None))),
        ("Trainer.evaluate, defaults (fp32)", _trainer_evaluate(blocks, work, False)),
        ("Trainer.evaluate, bf16=True", _trainer_evaluate(blocks, work, True)),
    ]
    # Tokens scored: each block's first token has no prediction.
    out = {"n_tokens": SHAPES.eval_blocks * (SHAPES.seq - 1), "sides": {}}
    for label, make in sides:  # a fresh model per side: no side alters another's
        try:
            out["sides"][label] = _time_side(make)
        except Exception as e:  # noqa: BLE001 - recorded in the table, the other sides still run
            out["sides"][label] = {"error": _one_line(e)}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out
