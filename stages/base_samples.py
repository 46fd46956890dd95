"""base_samples: the base model's samples for `generate.prompts`, made once per base model and settings.

The export shows them beside the tuned model's (same prompts, decoding settings and seed). They depend
only on models/base, the generate params, the task (and its template or labels) and the device choice, so
a `dvc exp run -S train.*` reuses them instead of generating with the base model again.
"""
from transformers import AutoTokenizer

from lmtune import device, params, paths, tasks
from lmtune.eval import generation
from lmtune.errors import cli
from lmtune.io import atomic_write_json


@cli
def main() -> None:
    p = params.load()
    task = tasks.get(p.task)
    placement = device.current(p.train.precision)
    # a classifier's base is the base LM with the seeded, untrained head (as in the base evaluation)
    model = generation.place(task.load_model(paths.BASE, p.seed, p.flatten.label_names), placement)
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE)
    samples = task.samples(model, tokenizer, p.generate, p.flatten, placement)
    atomic_write_json(paths.BASE_SAMPLES, samples)
    print(f"base_samples: {paths.BASE_SAMPLES} ({len(samples)} samples on {placement.device})")


if __name__ == "__main__":
    main()
