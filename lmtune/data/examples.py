"""Per-example training rows: padding/truncating, the loss mask, and their Arrow table (packing whole examples
into rows is `lmtune.data.packing`).

(Concatenate-and-chunk of a whole token stream is `lmtune.data.chunking`.) Labels are the input ids with
IGNORE_INDEX where the loss looks away: padding, and a prompt's first `prompt_length` tokens. Every row also
says where it came from: `doc`, the index in its tokenized split of the example it holds (of the first one,
for packed rows), and `pos` (`numbered`), its index among the split's rows; the model never sees either.
"""
import numpy as np
import pyarrow as pa

from lmtune.errors import UserError

IGNORE_INDEX = -100  # label value skipped by the loss, as in transformers / torch cross_entropy


def pad_examples(ids_list, block_size: int, pad_id: int, prompt_lengths=None, dtype=np.uint16) -> dict:
    """Pad/truncate each example to block_size: attention_mask 1 on tokens; labels -100 on padding
    and on the first prompt_length tokens (the prompt); doc = the example's index."""
    n = len(ids_list)
    input_ids = np.full((n, block_size), pad_id, dtype=dtype)
    attention = np.zeros((n, block_size), dtype=np.int8)
    labels = np.full((n, block_size), IGNORE_INDEX, dtype=np.int32)
    for i, ids in enumerate(ids_list):
        ids = np.asarray(ids)[:block_size]
        k = len(ids)
        input_ids[i, :k] = ids
        attention[i, :k] = 1
        labels[i, :k] = ids
        if prompt_lengths is not None:
            labels[i, : min(int(prompt_lengths[i]), k)] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "doc": np.arange(n, dtype=np.int64)}


def _fixed(arr: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(-1)), arr.shape[1])


def examples_table(cols: dict) -> pa.Table:
    """2-D arrays -> fixed-size-list columns; 1-D arrays (class labels) -> scalar columns."""
    return pa.table({k: _fixed(v) if v.ndim == 2 else pa.array(v) for k, v in cols.items()})


def columns(ds) -> tuple[dict, list, np.dtype]:
    """A tokenized split as python lists per column, its input_ids, and the ids' storage dtype."""
    cols = {c: list(ds[c]) for c in ds.column_names}
    return cols, cols["input_ids"], np.dtype(ds.features["input_ids"].feature.dtype)


def scored_only(out: dict) -> dict:
    """Drop examples that end up with no scored token (an instruction whose response was truncated away,
    a one-token text); position 0 is never a target."""
    keep = (out["labels"][:, 1:] != IGNORE_INDEX).any(axis=1)
    return {k: v[keep] for k, v in out.items()}


def numbered(out: dict) -> dict:
    """`out` with `pos`: each row's index among the split's rows (before chunk.max_*_blocks samples them)."""
    return {**out, "pos": np.arange(len(out["input_ids"]), dtype=np.int64)}


def none_left(out: dict, where: str, block_size: int) -> dict:
    """`out` unless it holds no example: then one error naming the split and the block size."""
    if len(out["input_ids"]) == 0:
        raise UserError(f"{where}: no example left with a token to learn within chunk.block_size={block_size}")
    return out
