"""chunk: fixed-size training examples, as the task cuts them (lmtune/tasks/): causal LM concat cuts the
token stream into `block_size` blocks (labels = input ids); otherwise one example per row, padded/truncated
(masks, -100 labels), or instruction/chat examples packed whole, several per row, position ids restarting
at each (lmtune/data/packing.py)."""
import datasets

from lmtune import paths
from lmtune.data import chunking
from lmtune.errors import UserError, cli
from lmtune.io import atomic_dir, save_tables
from lmtune.models import config_file
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    config = config_file.read(paths.BASE)
    if p.chunk.block_size > (context := config_file.context_length(config)):
        raise UserError(f"chunk.block_size: {p.chunk.block_size} is above the model's context length {context}")
    out = chunking.split_examples(task, datasets.load_from_disk(paths.TOKENS), config_file.pad_token_id(config))
    with atomic_dir(paths.CHUNKS) as tmp:
        save_tables(out, tmp)
    print(f"chunk: {', '.join(f'{k} {len(v)} blocks of {p.chunk.block_size}' for k, v in out.items())}")


if __name__ == "__main__":
    main()
