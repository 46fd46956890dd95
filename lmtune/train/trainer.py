"""Fine-tuning with the HF Trainer: arguments from params, block collation, the run and its metrics.

The same code runs on one CPU, one GPU, or many processes under `accelerate launch` (the Trainer
reads the launcher's environment); only the main process writes outputs.
"""
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from lmtune.errors import UserError
from lmtune.eval import lm_head
from lmtune.params import TrainParams
from lmtune.train import checkpoints, hardware


def precision_flags(precision: str, cuda: bool, bf16_supported: bool, cpu_bf16: bool = False) -> dict:
    """`auto`: bf16 where the GPU supports it, fp16 on other GPUs, bf16 autocast on CPUs with native bf16
    (cpu_bf16: lmtune.train.hardware.cpu_native_bf16), fp32 on other CPUs. Evaluation stays fp32 on CPU
    under auto (lmtune.device): its numbers stay exact and comparable across machines."""
    precision = hardware.train_precision(precision, cuda, bf16_supported, cpu_bf16)
    if precision == "fp16" and not cuda:
        raise UserError("train.precision: fp16 needs a CUDA GPU (use auto or fp32 on CPU)")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def optimizer_name(cuda: bool) -> str:
    """Fused AdamW wherever torch has it: on CUDA, and on CPU since torch 2.4 (one kernel instead of a
    Python loop over the parameters: ~5x faster steps for SmolLM2's 135M parameters here)."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return "adamw_torch_fused" if cuda or (major, minor) >= (2, 4) else "adamw_torch"


_TRAINING_ARGUMENTS = transformers.TrainingArguments  # the installed class (tests stub the module attribute)


def checkpointing_flag(on: bool, args_class=None) -> dict:
    """The TrainingArguments keyword for activation (gradient) checkpointing, under the installed name.

    Newer transformers 5 releases call it `activation_checkpointing` (the old name warns); older 5.x ones,
    such as the 5.17 of the GPU machine image, only know `gradient_checkpointing` and reject the new name.
    """
    fields = {f.name for f in dataclasses.fields(args_class or _TRAINING_ARGUMENTS)}
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": on}


def cpu_bf16_here(cuda: bool) -> bool:
    """This machine trains in bf16 under `train.precision: auto` without a GPU (no MPS, a CPU with native bf16)."""
    return not cuda and not torch.backends.mps.is_available() and hardware.cpu_native_bf16(hardware.cpu_flags())


def liger_available(cuda: bool) -> bool:
    """Liger's fused linear cross-entropy (Triton, CUDA only) is installed: the Trainer applies it
    (TrainingArguments.use_liger_kernel). Not installed by this project and not yet run by it."""
    import importlib.util

    return cuda and importlib.util.find_spec("liger_kernel") is not None


def planned_steps(tp: TrainParams, n_examples: int, world_size: int = 1) -> int:
    """The optimizer steps the Trainer will run: max_steps, else epochs over the examples (the Trainer's
    arithmetic: the last partial batch kept, a partial accumulation window counted as a step)."""
    if tp.max_steps > 0:
        return tp.max_steps
    batches = math.ceil(n_examples / (tp.batch_size * world_size))
    return math.ceil(math.ceil(batches / tp.gradient_accumulation_steps) * tp.epochs)


def training_arguments(tp: TrainParams, seed: int, output_dir: Path,
                       planned_steps: int | None = None) -> transformers.TrainingArguments:
    """planned_steps: the run's optimizer steps, for `train.torch_compile: auto` (None: unknown, no compile)."""
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
        **precision_flags(tp.precision, cuda, cuda and torch.cuda.is_bf16_supported(), cpu_bf16_here(cuda)),
        **checkpointing_flag(tp.gradient_checkpointing),
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
        # Explicit: the Trainer cannot find the label names of a peft-wrapped model, and without them
        # it computes no eval loss (early stopping on eval loss then breaks).
        label_names=["labels"],
        # Off: with the filter on, a NaN/inf step loss is silently replaced by the window's mean.
        logging_nan_inf_filter=False,
        report_to="none",  # curves are written from the log history after training (write_curves)
        dataloader_num_workers=tp.dataloader_workers,
        dataloader_pin_memory=cuda,
        optim=optimizer_name(cuda),
        torch_compile=hardware.use_torch_compile(tp.torch_compile, cuda, planned_steps),
        **({"use_liger_kernel": True} if liger_available(cuda) else {}),
        # A progress bar (steps, ETA; each logged loss printed above it) on a terminal; plain log lines otherwise.
        disable_tqdm=not sys.stderr.isatty(),
        # Without a GPU, say so: then `accelerate launch --multi_gpu`/torchrun processes on CPUs join one
        # gloo process group instead of each training alone.
        use_cpu=not (cuda or torch.backends.mps.is_available()),
    )


# The columns of data/chunks a model's forward pass takes; the others (`doc`, `pos`: where each example came
# from, for the per-block files) never reach the model.
MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "position_ids")


def collate_blocks(examples: list[dict]) -> dict:
    """Stack fixed-size examples' model inputs; causal LM labels are the input ids (the model shifts them)."""
    keys = [k for k in examples[0] if k in MODEL_INPUTS]
    batch = {k: torch.from_numpy(np.stack([np.asarray(e[k]) for e in examples]).astype(np.int64)) for k in keys}
    batch.setdefault("labels", batch["input_ids"].clone())
    return batch


def fsdp_on_cpu(accelerator, environ) -> bool:
    """Turn on the FSDP the launcher asked for (`ACCELERATE_USE_FSDP`) in processes without GPUs.

    accelerate 1.15 enables FSDP only on accelerator devices: with `use_cpu` its state stays MULTI_CPU
    (plain DDP over gloo) and the config file's FSDP settings are silently dropped. torch's FSDP2
    (`fully_shard`) itself runs on CPU over gloo, and accelerate's FSDP2 code paths (prepare, sharded
    checkpoints, gathering the full state dict to save) are device-agnostic, so the state is switched to
    FSDP with the plugin built from the launcher's environment, as accelerate does on GPUs.
    Returns True when it switched.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true" or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = FullyShardedDataParallelPlugin()
    return True


def lm_loss_kind(model, chunking: bool, compiled: bool, liger: bool, sharded: bool = False) -> str:
    """"liger" (Liger's fused kernel, CUDA), "chunked" (lmtune.eval.lm_head, for the models it knows) or "plain"
    (the model's own loss; also under torch.compile, where the hidden-state hook has not been checked, and under
    FSDP/DeepSpeed, whose sharded head weights are gathered only inside the model's own forward)."""
    if liger:
        return "liger"
    usable = chunking and not compiled and not sharded and lm_head.parts(model) is not None
    return "chunked" if usable else "plain"


def sharded_launch(environ=os.environ) -> bool:
    """Whether accelerate launched this process with FSDP or DeepSpeed (its launcher's environment)."""
    return any(environ.get(k, "false").lower() == "true" for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def loss_chunk_rows(model, tp: TrainParams, n_examples: int) -> int | None:
    """Positions per chunk of the loss the Trainer will use for `model` (None: not chunked), for the preflight."""
    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    compiled = hardware.use_torch_compile(tp.torch_compile, cuda, planned_steps(tp, n_examples, world))
    if lm_loss_kind(model, FiniteLossTrainer.chunked_lm_loss, compiled, liger_available(cuda), sharded_launch()) != "chunked":
        return None
    return lm_head.chunk_rows(lm_head.head_vocab(lm_head.parts(model)[1]))


def training_autocast_dtype(precision: str, device: str):
    """The autocast dtype of the Trainer's steps on `device` (what precision_flags asks it for), so the
    preflight profiles the forward pass training runs; None: fp32."""
    cuda = device == "cuda"
    flags = precision_flags(precision, cuda, cuda and torch.cuda.is_bf16_supported(), cpu_bf16_here(cuda))
    return torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else None


class FiniteLossTrainer(transformers.Trainer):
    """A Trainer that stops with an error naming the step as soon as one step's loss is NaN or inf.

    Checked on every micro-batch, not only at logging steps (the Trainer already syncs on the step
    loss each step for its own NaN filter, so this costs nothing extra). The stage then writes
    nothing: models/final and metrics/ keep their previous contents.
    """

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if fsdp_on_cpu(self.accelerator, os.environ):
            self.is_fsdp_enabled = True  # what the Trainer sets from the state on GPUs

    # The causal-LM loss a chunk of positions at a time (lmtune.eval.lm_head) where it applies; False: the model's own.
    chunked_lm_loss = True

    def lm_loss(self) -> str:
        """Which causal-LM loss the training steps use (lm_loss_kind)."""
        if self.label_smoother is not None or self.compute_loss_func is not None:
            return "plain"
        return lm_loss_kind(self.model, self.chunked_lm_loss, bool(self.args.torch_compile), self.args.use_liger_kernel,
                            self.is_fsdp_enabled or self.is_deepspeed_enabled)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The Trainer's loss, from chunks of the LM head's logits when lm_loss() says "chunked" (training steps;
        evaluation during training asks for the outputs and gets the plain path). The result is what the
        model's own loss would be: the same label shift, -100 and num_items_in_batch normalisation."""
        if return_outputs or "labels" not in inputs or self.lm_loss() != "chunked":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        backbone, head = lm_head.parts(model)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        hidden = lm_head.hidden_states(model, backbone, inputs)
        loss = lm_head.chunked_loss(hidden, head, labels, num_items_in_batch)
        # As Trainer.compute_loss: a loss normalised by the token count over all processes is scaled back up,
        # since DDP averages the gradients over them.
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        value = loss.detach().float().item()
        if not math.isfinite(value):
            raise UserError(
                f"training loss became {value} at step {self.state.global_step + 1} "
                f"(process {self.args.process_index}); lower train.learning_rate or check the data"
            )
        return loss


def save_final(hf_trainer: transformers.Trainer, out_dir: Path) -> None:
    """Write the trained model as one full, unsharded HF folder (weights, config, tokenizer). Call on every
    process: FSDP gathers the shards there; only the main process writes.

    The Trainer's own save_model writes nothing usable under FSDP's SHARDED_STATE_DICT (the checkpoints'
    type, needed to resume a sharded run); the full state dict is gathered instead, as the Trainer does
    for FULL_STATE_DICT, and saved through the same `_save` (save_pretrained of the model, or of the
    LoRA adapter, and the tokenizer).
    """
    state = hf_trainer.accelerator.state
    plugin = getattr(state, "fsdp_plugin", None)
    if not hf_trainer.is_fsdp_enabled or plugin is None or "FULL_STATE_DICT" in str(plugin.state_dict_type):
        hf_trainer.save_model(str(out_dir))
        return
    if hf_trainer.args.device.type == "cpu":
        full = full_state_dict(hf_trainer.model)  # collective: every process takes part, and gets the whole model
    else:  # accelerate's own gather: the whole model on the main process only, in its CPU memory (not run here)
        full = hf_trainer.accelerator.get_state_dict(hf_trainer.model)
    if hf_trainer.args.should_save:
        hf_trainer._save(str(out_dir), state_dict=full)


def full_state_dict(model) -> dict:
    """The model's state dict with every FSDP2 shard (DTensor) gathered into a plain CPU tensor.

    For processes on CPU, where accelerate's get_state_dict (torch's get_model_state_dict with
    full_state_dict) hands back the DTensors unchanged. Tied weights (GPT-2's lm_head and wte) are two
    DTensors over one local shard: gathered once (keyed by the shard's storage), so they stay one tensor and
    save_pretrained writes it once, as for an unsharded model. Every process gathers in the same (state dict)
    order and holds the full model for the moment.
    """
    from torch.distributed.tensor import DTensor

    gathered: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, value in model.state_dict().items():
        if isinstance(value, DTensor):
            local = value.to_local()
            key = (local.untyped_storage().data_ptr(), local.storage_offset(), tuple(value.shape))
            if key not in gathered:
                gathered[key] = value.full_tensor().detach().cpu()
            value = gathered[key]
        out[name] = value
    return out


def mean_logged_loss(log_history: list[dict]) -> float | None:
    """Step-weighted mean of the logged training losses.

    Unlike the Trainer's `training_loss` (which only averages the steps run since the last resume),
    this comes from the log history saved in every checkpoint, so a resumed run reports exactly what
    an uninterrupted one does.
    """
    total, steps, last = 0.0, 0, 0
    for h in log_history:
        if "loss" in h and "step" in h:
            total += h["loss"] * (h["step"] - last)
            steps += h["step"] - last
            last = h["step"]
    return total / steps if steps else None


# The Trainer's end-of-training summary: wall-clock rates, and a `train_loss` averaged over the steps run
# since the last resume. They are in metrics/train_timing.json / train.json instead of the curves.
SUMMARY_LOG = "train_runtime"


def write_curves(log_history: list[dict], out_dir: Path) -> None:
    """The training curves (dvclive format, x = global step) from the Trainer's log history.

    Written once, after training, from the history that checkpoints carry: a resumed run gets the full
    curves, identical to an uninterrupted run's (the stage writes them to a temp dir committed with its other outputs).
    """
    from dvclive import Live
    from dvclive.utils import standardize_metric_name

    with Live(dir=str(out_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for entry in log_history:
            if SUMMARY_LOG in entry or "step" not in entry:
                continue
            values = {k: v for k, v in entry.items() if k != "step" and isinstance(v, (int, float))}
            if not values:
                continue
            live.step = int(entry["step"])
            for k, v in sorted(values.items()):  # checkpoints store the history with sorted keys
                live.log_metric(standardize_metric_name(k, "dvclive.huggingface"), v)
            live.next_step()
    # dvclive's summary of the last values: train.json already carries them, and the folder is a DVC plots
    # output, where a flat JSON summary would be drawn as a chart of its own.
    (Path(out_dir) / "metrics.json").unlink(missing_ok=True)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    from lmtune.train.limits import peak_rss

    return peak_rss() / 2**20


# long: half of it is the two result records (metrics, timing), one documented number a line; the run itself
# (resume point, callbacks, Trainer) is the first 20 lines.
def train(model, tokenizer, train_ds, eval_ds, tp: TrainParams, seed: int, ckpt_dir: Path, fp: str,
          callbacks=(), stamp_extra: dict | None = None, args: transformers.TrainingArguments | None = None):
    """Run the Trainer, resuming from `ckpt_dir` when its stamp equals `fp` (lmtune.train.checkpoints).

    `callbacks` are added to the Trainer's; `stamp_extra` is recorded beside the fingerprint (the identity
    it hashes, the micro-batch lmtune.train.plan chose); `args`: training_arguments(tp, seed, ckpt_dir)
    when the caller already built them. Returns (trainer, deterministic metrics, timing metrics).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # set by `accelerate launch`; read by the Trainer too
    args = args or training_arguments(tp, seed, ckpt_dir, planned_steps(tp, len(train_ds), world))
    now = (stamp_extra or {}).get("identity")
    resume = checkpoints.resumable_checkpoint(ckpt_dir, fp, now) if args.process_index == 0 else None
    if args.world_size > 1:  # every process must resume from the same place
        from accelerate.utils import broadcast_object_list

        resume = broadcast_object_list([resume])[0]
    callbacks = [*callbacks, checkpoints.StampOnSave(ckpt_dir, {"fingerprint": fp, **(stamp_extra or {})})]
    if tp.early_stopping_patience:
        callbacks.append(transformers.EarlyStoppingCallback(early_stopping_patience=tp.early_stopping_patience))
    trainer = FiniteLossTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds if tp.eval_steps else None,
        data_collator=collate_blocks, processing_class=tokenizer, callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    steps_run = state.global_step - (int(Path(resume).name.split("-")[-1]) if resume else 0)
    block = len(train_ds[0]["input_ids"])
    tokens_per_step = tp.batch_size * tp.gradient_accumulation_steps * args.world_size * block
    metrics = {
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "train_loss": round(mean_logged_loss(state.log_history), 6) if losses else None,
        "final_logged_loss": losses[-1] if losses else None,
        "train_tokens": state.global_step * tokens_per_step,
        "global_batch_size": tp.batch_size * tp.gradient_accumulation_steps * args.world_size,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    timing = {
        "wall_time_s": round(wall, 2),
        "tokens_per_second": round(steps_run * tokens_per_step / wall, 1) if wall else None,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "device": str(args.device),
        "world_size": args.world_size,
        # What made this speed: the training precision (train.precision resolved on this machine), whether
        # torch.compile ran (train.torch_compile resolved) and which causal-LM loss (FiniteLossTrainer.lm_loss).
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "torch_compile": bool(args.torch_compile),
        "lm_loss": trainer.lm_loss(),
        # Where this run started; kept out of train.json so a resumed run's metrics equal an uninterrupted one's.
        "resumed_from_step": int(Path(resume).name.split("-")[-1]) if resume else 0,
    }
    return trainer, metrics, timing
