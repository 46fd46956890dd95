"""tokenize: fast tokenizer in batches over `num_proc` workers; compact uint16/uint32 ids per document."""
import datasets
from transformers import AutoTokenizer

from lmtune import paths
from lmtune.data import chunking, text
from lmtune.errors import cli
from lmtune.io import atomic_dir, save_dataset
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    datasets.disable_caching()
    tokens = text.tokenize(task, datasets.load_from_disk(paths.FLAT), AutoTokenizer.from_pretrained(paths.BASE), p.tokenize)
    with atomic_dir(paths.TOKENS) as tmp:
        save_dataset(tokens, tmp)
    counts = {k: chunking.count_values(v.data.column("input_ids")) for k, v in tokens.items()}
    dtype = tokens["train"].features["input_ids"].feature.dtype
    print(f"tokenize: {', '.join(f'{k} {n:,} tokens' for k, n in counts.items())} ({dtype})")


if __name__ == "__main__":
    main()
