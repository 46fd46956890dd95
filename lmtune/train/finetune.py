"""The train stage's work: load the task's model, plan the micro-batch, train (resuming when the checkpoint's
identity matches), and write the model and the curves where the stage stages its outputs.

Under `accelerate launch` every process runs fine_tune (they train together and all take part in saving the
model: FSDP and DeepSpeed gather the weights there); only the main process writes files.
"""
import os
from pathlib import Path

from lmtune import allocator, device, paths
from lmtune.models import loading, lora
from lmtune.train import checkpoints, trainer
from lmtune.train.marker import RunMarker, unfinished_run
from lmtune.train.plan import preflight


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def load(p, task):
    """(the chunked blocks, the tokenizer, the task's model: a seeded new head for a classifier, LoRA
    adapters when lora.enabled)."""
    import datasets
    from transformers import AutoTokenizer

    chunks = datasets.load_from_disk(paths.CHUNKS).with_format("numpy")
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE)
    model = loading.load_model(paths.BASE, task.head, p.seed, **task.model_kwargs())
    return chunks, tokenizer, lora.with_lora(model, task.head, p.lora, p.train.gradient_checkpointing)


def fine_tune(p, task, final_dir: Path, curves_dir: Path) -> tuple[dict, dict]:
    """Train `task`'s model on data/chunks as params `p` say: the model goes to `final_dir`, the dvclive
    curves to `curves_dir`. Returns (metrics: deterministic, for metrics/train.json; timing: wall clock,
    memory and the micro-batch plan, for metrics/train_timing.json)."""
    tuned = allocator.tune_cpu_allocator()  # large per-step tensors: reuse memory instead of page-faulting it in
    main = is_main_process()
    if main and (note := unfinished_run(paths.TRAIN_MARKER)):
        print(note, flush=True)
    chunks, tokenizer, model = load(p, task)
    # Will the configured micro-batch fit (train.auto_batch_size: which one does)? Refuses with one
    # line before anything is written; the global batch never changes.
    where = device.current(p.train.precision)
    plan = preflight(model, chunks["train"][0], trainer.collate_blocks, p.train, p.lora.enabled,
                     where.device, trainer.training_autocast_dtype(p.train.precision, where.device), heap_slack=tuned,
                     loss_chunk_rows=trainer.loss_chunk_rows(model, p.train, len(chunks["train"])))
    tp = p.train.model_copy(update={"batch_size": plan.batch_size,
                                    "gradient_accumulation_steps": plan.gradient_accumulation_steps})
    if plan.auto and main:
        print(f"train: micro-batch {plan.batch_size} x {plan.gradient_accumulation_steps} accumulation steps "
              f"(train.auto_batch_size; estimated peak {plan.estimate_mb:,.0f} MB of {plan.limit_mb or 0:,.0f} MB)", flush=True)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    args = trainer.training_arguments(tp, p.seed, paths.CHECKPOINTS, trainer.planned_steps(tp, len(chunks["train"]), world))
    ident = checkpoints.identity(p, tp, args.world_size)
    with RunMarker(paths.TRAIN_MARKER, plan, where.device, enabled=main) as marker:
        hf_trainer, metrics, timing = trainer.train(
            model, tokenizer, chunks["train"], chunks["validation"], tp, p.seed, paths.CHECKPOINTS,
            checkpoints.fingerprint(ident), callbacks=[marker.callback()],
            stamp_extra={"identity": ident, **plan.choice()}, args=args)
        save(hf_trainer, final_dir, curves_dir)
    return metrics, {**timing, **plan.record()}


def save(hf_trainer, final_dir: Path, curves_dir: Path) -> None:
    trainer.save_final(hf_trainer, Path(final_dir))  # every process: a sharded model is gathered here
    hf_trainer.accelerator.wait_for_everyone()
    if hf_trainer.is_world_process_zero():
        # A pickle of TrainingArguments (paths, a timestamped logging dir): not needed to load the model,
        # never loaded by this project, and it would make two identical runs' models/final differ.
        (Path(final_dir) / "training_args.bin").unlink(missing_ok=True)
        # peft's template card beside an adapter names the base by its absolute path (base_model: /…/models/base),
        # so the same run in another folder would differ; export writes the real card.
        (Path(final_dir) / "README.md").unlink(missing_ok=True)
        trainer.write_curves(hf_trainer.state.log_history, curves_dir)
