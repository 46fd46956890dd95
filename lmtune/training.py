"""Fine-tuning with the HF Trainer: arguments from params, block collation, resumable checkpoints.

The same code runs on one CPU, one GPU, or many processes under `accelerate launch` (the Trainer
reads the launcher's environment); only the main process writes outputs.
"""
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers.trainer_utils import get_last_checkpoint

from lmtune.errors import UserError
from lmtune.params import TrainParams

FINGERPRINT = "fingerprint.json"


def precision_flags(precision: str, cuda: bool, bf16_supported: bool) -> dict:
    """`auto`: bf16 where the GPU supports it, fp16 on other GPUs, fp32 on CPU."""
    if precision == "auto":
        precision = ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise UserError("train.precision: fp16 needs a CUDA GPU (use auto or fp32 on CPU)")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_arguments(tp: TrainParams, seed: int, output_dir: Path) -> transformers.TrainingArguments:
    cuda = torch.cuda.is_available()
    evaluating = tp.eval_steps > 0
    return transformers.TrainingArguments(
        output_dir=str(output_dir),
        seed=seed,
        data_seed=seed,
        learning_rate=tp.learning_rate,
        weight_decay=tp.weight_decay,
        num_train_epochs=tp.epochs,
        max_steps=tp.max_steps,
        per_device_train_batch_size=tp.batch_size,
        per_device_eval_batch_size=tp.batch_size,
        gradient_accumulation_steps=tp.gradient_accumulation_steps,
        warmup_steps=tp.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the total steps
        lr_scheduler_type=tp.lr_scheduler,
        max_grad_norm=tp.max_grad_norm,
        **precision_flags(tp.precision, cuda, cuda and torch.cuda.is_bf16_supported()),
        gradient_checkpointing=tp.gradient_checkpointing,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=tp.eval_steps or None,
        save_strategy="steps",
        save_steps=tp.save_steps,
        save_total_limit=tp.save_total_limit,
        load_best_model_at_end=tp.early_stopping_patience > 0,
        metric_for_best_model="eval_loss" if tp.early_stopping_patience else None,
        greater_is_better=False if tp.early_stopping_patience else None,
        logging_steps=tp.logging_steps,
        logging_first_step=True,
        report_to="none",  # dvclive is added as an explicit callback with our own output dir
        dataloader_num_workers=tp.dataloader_workers,
        dataloader_pin_memory=cuda,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        torch_compile=tp.torch_compile,
        disable_tqdm=True,
    )


def collate_blocks(examples: list[dict]) -> dict:
    """Stack fixed-size examples; causal LM labels are the input ids (the model shifts them)."""
    batch = {k: torch.from_numpy(np.stack([np.asarray(e[k]) for e in examples]).astype(np.int64)) for k in examples[0]}
    batch.setdefault("labels", batch["input_ids"].clone())
    return batch


class StopOnNonFinite(transformers.TrainerCallback):
    """Stop with an error naming the step when the training loss turns NaN or inf."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise UserError(f"training loss became {loss} at step {state.global_step}; lower train.learning_rate")


def fingerprint(tp: TrainParams, seed: int, inputs: list[Path]) -> str:
    """What a checkpoint depends on: the train params, the seed, and the bytes of the data and base model."""
    h = hashlib.sha256(json.dumps({"train": tp.model_dump(), "seed": seed}, sort_keys=True).encode())
    for root in inputs:
        for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            h.update(str(f.relative_to(root)).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()


def resumable_checkpoint(ckpt_dir: Path, fp: str) -> str | None:
    """The last checkpoint if it was made with the same params and data; otherwise discard the folder."""
    if not ckpt_dir.is_dir():
        return None
    stamp = ckpt_dir / FINGERPRINT
    if stamp.is_file() and json.loads(stamp.read_text())["fingerprint"] == fp:
        return get_last_checkpoint(str(ckpt_dir))
    if any(ckpt_dir.iterdir()):
        print(f"discarding checkpoints in {ckpt_dir}: made with different params or data")
    shutil.rmtree(ckpt_dir)
    return None


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train(model, tokenizer, train_ds, eval_ds, tp: TrainParams, seed: int, ckpt_dir: Path, fp: str, live_dir: Path):
    """Run the Trainer (resuming when allowed); returns (trainer, deterministic metrics, timing metrics)."""
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    args = training_arguments(tp, seed, ckpt_dir)
    resume = resumable_checkpoint(ckpt_dir, fp) if args.process_index == 0 else None
    if args.world_size > 1:  # every process must resume from the same place
        from accelerate.utils import broadcast_object_list

        resume = broadcast_object_list([resume])[0]
    callbacks = [StopOnNonFinite()]
    if args.process_index == 0:
        live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        callbacks.append(DVCLiveCallback(live=live))
    if tp.early_stopping_patience:
        callbacks.append(transformers.EarlyStoppingCallback(early_stopping_patience=tp.early_stopping_patience))
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds if tp.eval_steps else None,
        data_collator=collate_blocks, processing_class=tokenizer, callbacks=callbacks,
    )
    if trainer.is_world_process_zero():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / FINGERPRINT).write_text(json.dumps({"fingerprint": fp}) + "\n")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    steps_run = state.global_step - (int(Path(resume).name.split("-")[-1]) if resume else 0)
    block = len(train_ds[0]["input_ids"])
    tokens_per_step = tp.batch_size * tp.gradient_accumulation_steps * args.world_size * block
    metrics = {
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "train_loss": round(result.training_loss, 6),
        "final_logged_loss": losses[-1] if losses else None,
        "train_tokens": state.global_step * tokens_per_step,
        "global_batch_size": tp.batch_size * tp.gradient_accumulation_steps * args.world_size,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "resumed_from_step": int(Path(resume).name.split("-")[-1]) if resume else 0,
    }
    timing = {
        "wall_time_s": round(wall, 2),
        "tokens_per_second": round(steps_run * tokens_per_step / wall, 1) if wall else None,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "device": str(args.device),
        "world_size": args.world_size,
    }
    return trainer, metrics, timing
