"""train: fine-tune the base model on the training blocks; resumable checkpoints, dvclive curves.

Works unchanged under `accelerate launch` (only the main process writes outputs).
"""
import datasets
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune import params, paths, training
from lmtune.errors import cli
from lmtune.io import atomic_dir, atomic_write_json


@cli
def main() -> None:
    p = params.load()
    chunks = datasets.load_from_disk(paths.CHUNKS).with_format("numpy")
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE)
    model = AutoModelForCausalLM.from_pretrained(paths.BASE, use_safetensors=True)
    fp = training.fingerprint(p.train, p.seed, [paths.CHUNKS, paths.BASE])
    trainer, metrics, timing = training.train(
        model, tokenizer, chunks["train"], chunks["validation"], p.train, p.seed,
        paths.CHECKPOINTS, fp, paths.TRAIN_LIVE,
    )
    if trainer.is_world_process_zero():
        with atomic_dir(paths.FINAL) as tmp:
            trainer.save_model(tmp)
        atomic_write_json(paths.TRAIN_METRICS, metrics)
        atomic_write_json(paths.TRAIN_TIMING, timing)
        print(f"train: {metrics['steps']} steps, loss {metrics['train_loss']:.4f}, {timing['tokens_per_second']} tokens/s")


if __name__ == "__main__":
    main()
