"""chunk: fixed-size training examples. causal LM concat: the token stream cut into `block_size` blocks
(labels = input ids); otherwise per example, see lmtune.tasks (pad/truncate, or pack for instruction)."""
import datasets

from lmtune import chunking, models, params, paths, tasks
from lmtune.errors import UserError, cli
from lmtune.io import atomic_dir, save_tables


@cli
def main() -> None:
    all_params = params.load()
    p = all_params.chunk
    config = models.load_config(paths.BASE)
    context = models.context_length(config)
    if p.block_size > context:
        raise UserError(f"chunk.block_size: {p.block_size} is above the model's context length {context}")
    tokens = datasets.load_from_disk(paths.TOKENS)
    caps = {"train": p.max_train_blocks, "validation": p.max_validation_blocks}
    if all_params.task != "causal_lm" or p.mode == "pad":
        out = per_example_chunks(all_params, tokens, caps, config.pad_token_id)
    else:
        out = concat_chunks(all_params, tokens, caps)
    with atomic_dir(paths.CHUNKS) as tmp:
        save_tables(out, tmp)
    print(f"chunk: {', '.join(f'{k} {len(v)} blocks of {p.block_size}' for k, v in out.items())}")



def per_example_chunks(all_params, tokens, caps, pad_id) -> dict:
    """pad: one example per row, padded/truncated with attention_mask and -100 labels (prompt, padding);
    instruction + concat: examples packed into full blocks with the prompts' labels -100."""
    p = all_params.chunk
    out = {}
    for split, ds in tokens.items():
        cols = tasks.build_chunks(all_params.task, ds, p.mode, p.block_size, pad_id)
        if len(cols["input_ids"]) == 0:
            raise UserError(f"data/tokens {split}: no example left with a token to learn within chunk.block_size={p.block_size}")
        out[split] = chunking.sample_blocks(tasks.examples_table(cols), caps[split], all_params.seed)
    return out


def concat_chunks(all_params, tokens, caps) -> dict:
    p = all_params.chunk
    out = {}
    for split, ds in tokens.items():
        col = ds.data.column("input_ids")
        blocks = chunking.concat_blocks(col, p.block_size)
        if len(blocks) == 0:
            raise UserError(
                f"data/tokens {split}: {chunking.count_values(col)} tokens, fewer than one block of chunk.block_size={p.block_size}"
            )
        out[split] = chunking.sample_blocks(blocks, caps[split], all_params.seed)
    return out


if __name__ == "__main__":
    main()
