"""chunk: fixed-size training examples, as the task cuts them (lmtune/tasks/): causal LM concat cuts the
token stream into `block_size` blocks (labels = input ids); otherwise one example per row, padded/truncated
(masks, -100 labels), or instruction/chat examples packed whole, several per row, position ids restarting
at each (lmtune/data/packing.py)."""
import datasets

from lmtune import params, paths, tasks
from lmtune.data import chunking
from lmtune.models import loading
from lmtune.errors import UserError, cli
from lmtune.io import atomic_dir, save_tables

VALIDATION_SAMPLE_SEED = 0


@cli
def main() -> None:
    all_params = params.load()
    p, task = all_params.chunk, tasks.get(all_params.task)
    config = loading.load_config(paths.BASE)
    context = loading.context_length(config)
    if p.block_size > context:
        raise UserError(f"chunk.block_size: {p.block_size} is above the model's context length {context}")
    tokens = datasets.load_from_disk(paths.TOKENS)
    caps = {"train": p.max_train_blocks, "validation": p.max_validation_blocks}
    # The training sample follows `seed`; the validation sample does not, so runs that differ only in seed
    # score the same blocks (paired comparisons, seed groups in `make compare`).
    seeds = {"train": all_params.seed, "validation": VALIDATION_SAMPLE_SEED}
    out = {
        split: chunking.sample_blocks(task.chunk(ds, p.mode, p.block_size, config.pad_token_id, f"data/tokens {split}"),
                                      caps[split], seeds[split])
        for split, ds in tokens.items()
    }
    with atomic_dir(paths.CHUNKS) as tmp:
        save_tables(out, tmp)
    print(f"chunk: {', '.join(f'{k} {len(v)} blocks of {p.block_size}' for k, v in out.items())}")


if __name__ == "__main__":
    main()
