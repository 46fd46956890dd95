"""train: fine-tune the base model on the training blocks; resumable checkpoints (scratch), dvclive curves.

train.num_processes > 1 re-starts the stage under `accelerate launch` (lmtune/train/launch.py); only the
main process writes outputs. Before the first step a memory preflight (lmtune.train.plan) checks that the
configured micro-batch fits, or picks one that does with `train.auto_batch_size`. While training, a marker
beside the outputs (paths.TRAIN_MARKER) records the step reached and the memory in use, so that a run the
OS kills without a word is reported by the next one.
"""
import os
import shutil

import datasets
from transformers import AutoTokenizer

from lmtune import allocator, device, params, paths, tasks
from lmtune.train import launch
from lmtune.train import marker as run_marker
from lmtune.train import plan as planner
from lmtune.train import trainer
from lmtune.errors import cli
from lmtune.io import atomic_write_json, replace_dir, sweep_temps


@cli
def main() -> None:
    p = params.load()
    # train.num_processes > 1 (or an accelerate config): start this stage again under `accelerate launch`
    # and exit with its status; in the launched processes (and for one process) this returns at once.
    launch.relaunch(p.train.num_processes, p.train.accelerate_config, paths.ROOT)
    tuned = allocator.tune_cpu_allocator()  # large per-step tensors: reuse memory instead of page-faulting it in
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process and (note := run_marker.unfinished_run(paths.TRAIN_MARKER)):
        print(note, flush=True)
    chunks = datasets.load_from_disk(paths.CHUNKS).with_format("numpy")
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE)
    # The task's model class (classification: a seeded new head); LoRA adapters when lora.enabled.
    task = tasks.get(p.task)
    model = task.load_model(paths.BASE, p.seed, p.flatten.label_names)
    model = task.with_lora(model, p.lora, p.train.gradient_checkpointing)
    # Will the configured micro-batch fit (train.auto_batch_size: which one does)? Refuses with one
    # line before anything is written; the global batch never changes.
    where = device.current(p.train.precision)
    plan = planner.preflight(model, chunks["train"][0], trainer.collate_blocks, p.train, p.lora.enabled,
                             where.device, trainer.training_autocast_dtype(p.train.precision, where.device), heap_slack=tuned,
                             loss_chunk_rows=trainer.loss_chunk_rows(model, p.train, len(chunks["train"])))
    tp = p.train.model_copy(update={"batch_size": plan.batch_size,
                                    "gradient_accumulation_steps": plan.gradient_accumulation_steps})
    if plan.auto and main_process:
        print(f"train: micro-batch {plan.batch_size} x {plan.gradient_accumulation_steps} accumulation steps "
              f"(train.auto_batch_size; estimated peak {plan.estimate_mb:,.0f} MB of {plan.limit_mb or 0:,.0f} MB)", flush=True)
    fp = trainer.fingerprint(tp, p.seed, [paths.CHUNKS, paths.BASE]) + tasks.fingerprint_extra(p)
    with run_marker.RunMarker(paths.TRAIN_MARKER, plan, where.device, enabled=main_process) as marker:
        hf_trainer, metrics, timing, live_tmp = trainer.train(
            model, tokenizer, chunks["train"], chunks["validation"], tp, p.seed,
            paths.CHECKPOINTS, fp, paths.TRAIN_LIVE, callbacks=[marker.callback()], stamp_extra=plan.choice(),
        )
        # Every process calls save_model (FSDP/DeepSpeed gather the weights there); only the main one writes.
        final_tmp = paths.FINAL.parent / f".{paths.FINAL.name}.tmp-train"
        if hf_trainer.is_world_process_zero():
            sweep_temps(paths.FINAL)  # this run's temp name, and any a killed run left
        hf_trainer.accelerator.wait_for_everyone()
        try:
            hf_trainer.save_model(str(final_tmp))
            hf_trainer.accelerator.wait_for_everyone()
        except BaseException:
            if live_tmp is not None:
                shutil.rmtree(live_tmp, ignore_errors=True)
            raise
        if hf_trainer.is_world_process_zero():
            # A pickle of TrainingArguments (paths, a timestamped logging dir): not needed to load the model,
            # never loaded by this project, and it would make two identical runs' models/final differ.
            (final_tmp / "training_args.bin").unlink(missing_ok=True)
            try:
                replace_dir(final_tmp, paths.FINAL)
                replace_dir(live_tmp, paths.TRAIN_LIVE)
            except BaseException:  # a failed rename: the outputs stay as they were, and so does the folder around them
                shutil.rmtree(final_tmp, ignore_errors=True)
                shutil.rmtree(live_tmp, ignore_errors=True)
                raise
            atomic_write_json(paths.TRAIN_METRICS, metrics)
            atomic_write_json(paths.TRAIN_TIMING, {**timing, **plan.record()})
            # Checkpoints are crash-resume scratch: once models/final is written they are never resumed (a
            # finished run is trained again from step 0), so free their disk (weights + fp32 optimizer state).
            shutil.rmtree(paths.CHECKPOINTS, ignore_errors=True)
            print(f"train: {metrics['steps']} steps, loss {metrics['train_loss']:.4f}, {timing['tokens_per_second']} tokens/s")


if __name__ == "__main__":
    main()
