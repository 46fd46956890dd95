"""chunk: concatenate-and-chunk the token stream into `block_size` blocks (labels = input ids)."""
import datasets

from lmtune import chunking, models, params, paths
from lmtune.errors import UserError, cli
from lmtune.io import atomic_dir


@cli
def main() -> None:
    all_params = params.load()
    p = all_params.chunk
    context = models.context_length(models.load_config(paths.BASE))
    if p.block_size > context:
        raise UserError(f"chunk.block_size: {p.block_size} is above the model's context length {context}")
    tokens = datasets.load_from_disk(paths.TOKENS)
    caps = {"train": p.max_train_blocks, "validation": p.max_validation_blocks}
    out = {}
    for split, ds in tokens.items():
        col = ds.data.column("input_ids")
        blocks = chunking.blocks_from_table(ds.data.table, "input_ids", p.block_size, col.type.value_type.to_pandas_dtype())
        if len(blocks) == 0:
            raise UserError(
                f"data/tokens {split}: {chunking.count_values(col)} tokens, fewer than one block of chunk.block_size={p.block_size}"
            )
        blocks = chunking.sample_blocks(blocks, caps[split], all_params.seed)
        out[split] = datasets.Dataset(chunking.blocks_table(blocks))
    with atomic_dir(paths.CHUNKS) as tmp:
        datasets.DatasetDict(out).save_to_disk(tmp)
    print(f"chunk: {', '.join(f'{k} {len(v)} blocks of {p.block_size}' for k, v in out.items())}")


if __name__ == "__main__":
    main()
