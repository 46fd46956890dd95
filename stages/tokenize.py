"""tokenize: fast tokenizer in batches over `num_proc` workers; compact uint16/uint32 ids per document."""
import datasets
from transformers import AutoTokenizer

from lmtune import params, paths, tasks
from lmtune.data import chunking
from lmtune.data import text
from lmtune.errors import cli
from lmtune.io import atomic_dir, save_dataset


@cli
def main() -> None:
    all_params = params.load()
    p, task = all_params.tokenize, tasks.get(all_params.task)
    datasets.disable_caching()
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE)
    dtype = text.token_dtype(len(tokenizer))
    eos = tokenizer.eos_token_id if p.eos_between_documents else None
    flat = datasets.load_from_disk(paths.FLAT)
    tokens = flat.map(
        lambda b: task.tokenize_batch(tokenizer, b, eos),
        batched=True, batch_size=p.batch_size, num_proc=p.num_proc if p.num_proc > 1 else None,
        remove_columns=flat["train"].column_names, features=task.token_features(dtype),
    )
    with atomic_dir(paths.TOKENS) as tmp:
        save_dataset(tokens, tmp)
    counts = {k: chunking.count_values(v.data.column("input_ids")) for k, v in tokens.items()}
    print(f"tokenize: {', '.join(f'{k} {n:,} tokens' for k, n in counts.items())} ({dtype.name})")


if __name__ == "__main__":
    main()
