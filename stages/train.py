"""train: fine-tune the base model on the training blocks; resumable checkpoints, dvclive curves.

Works unchanged under `accelerate launch` (only the main process writes outputs).
"""
import shutil

import datasets
from transformers import AutoTokenizer

from lmtune import allocator, params, paths, tasks, training
from lmtune.errors import cli
from lmtune.io import atomic_write_json, replace_dir, sweep_temps


@cli
def main() -> None:
    allocator.tune_cpu_allocator()  # large per-step tensors: reuse memory instead of page-faulting it in
    p = params.load()
    chunks = datasets.load_from_disk(paths.CHUNKS).with_format("numpy")
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE)
    # The task's model class (classification: a seeded new head); LoRA adapters when lora.enabled.
    task = tasks.get(p.task)
    model = task.load_model(paths.BASE, p.seed, p.flatten.label_names)
    model = task.with_lora(model, p.lora, p.train.gradient_checkpointing)
    fp = training.fingerprint(p.train, p.seed, [paths.CHUNKS, paths.BASE]) + tasks.fingerprint_extra(p)
    trainer, metrics, timing, live_tmp = training.train(
        model, tokenizer, chunks["train"], chunks["validation"], p.train, p.seed,
        paths.CHECKPOINTS, fp, paths.TRAIN_LIVE,
    )
    # Every process calls save_model (FSDP/DeepSpeed gather the weights there); only the main one writes.
    final_tmp = paths.FINAL.parent / f".{paths.FINAL.name}.tmp-train"
    if trainer.is_world_process_zero():
        sweep_temps(paths.FINAL)  # this run's temp name, and any a killed run left
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(final_tmp))
        trainer.accelerator.wait_for_everyone()
    except BaseException:
        if live_tmp is not None:
            shutil.rmtree(live_tmp, ignore_errors=True)
        raise
    if trainer.is_world_process_zero():
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
        atomic_write_json(paths.TRAIN_TIMING, timing)
        print(f"train: {metrics['steps']} steps, loss {metrics['train_loss']:.4f}, {timing['tokens_per_second']} tokens/s")


if __name__ == "__main__":
    main()
