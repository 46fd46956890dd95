"""base_samples: the base model's samples for `generate.prompts`, made once per base model and settings.

The export shows them beside the tuned model's (same prompts, decoding settings and seed). They depend
only on models/base, the generate params, the task (and its template or labels) and the device choice, so
a `dvc exp run -S train.*` reuses them instead of generating with the base model again.
"""
from transformers import AutoTokenizer

from lmtune import device, paths
from lmtune.errors import cli
from lmtune.eval import generation
from lmtune.io import atomic_write_json
from lmtune.models import loading
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    placement = device.current(p.train.precision)
    # a classifier's base is the base LM with the seeded, untrained head (as in the base evaluation)
    model = generation.place(loading.load_model(paths.BASE, task.head, p.seed, **task.model_kwargs()), placement)
    samples = generation.task_samples(task, model, AutoTokenizer.from_pretrained(paths.BASE), p.generate, placement)
    atomic_write_json(paths.BASE_SAMPLES, samples)
    print(f"base_samples: {paths.BASE_SAMPLES} ({len(samples)} samples on {placement.device})")


if __name__ == "__main__":
    main()
