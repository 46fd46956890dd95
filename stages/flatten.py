"""flatten: each raw record becomes the task's columns: `text` (nested fields joined) for causal LM,
`prompt` + `response` for instruction tuning, `text` (+ `text_pair`) + `label` for classification."""
import datasets

from lmtune import paths
from lmtune.data import flatten
from lmtune.errors import cli
from lmtune.io import atomic_dir, save_dataset
from stages.common import begin


@cli
def main() -> None:
    _, task = begin()
    datasets.disable_caching()  # map results go to a temp dir, never beside data/raw (another stage's out)
    flat = flatten.flatten(task, datasets.load_from_disk(paths.RAW))
    with atomic_dir(paths.FLAT) as tmp:
        save_dataset(flat, tmp)
    print(f"flatten: {', '.join(f'{k} {len(v)} documents' for k, v in flat.items())}")


if __name__ == "__main__":
    main()
