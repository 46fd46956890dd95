"""Concatenate-and-chunk, zero-copy and streaming.

The blocks are a pure function of the token stream: the global concatenation of every document cut
every `block_size` tokens, last partial block dropped (as run_clm.py does). They never depend on how
the stream was batched. Memory stays bounded whatever the corpus size: the blocks are fixed-size-list
views of the memory-mapped token values, batch by batch; only a block that straddles two record
batches is copied (block_size tokens), so 100M tokens allocate nothing of their size.

Each block also says where it came from: `doc`, the row (document) of the tokenized split its first token
belongs to, and `pos`, its index in the stream; two int64 per block, computed from the list offsets alone.
"""
import numpy as np
import pyarrow as pa


def group_blocks(ids: np.ndarray, block_size: int) -> np.ndarray:
    """Cut a flat token array into (n_blocks, block_size); the remainder (< block_size) is dropped."""
    n = len(ids) // block_size
    return ids[: n * block_size].reshape(n, block_size)


def _values(chunk: pa.ListArray) -> pa.Array:
    # The flat child values of a list array, sliced to this chunk's offsets: zero-copy over the mmap.
    offsets = chunk.offsets
    start, stop = offsets[0].as_py(), offsets[len(chunk)].as_py()
    return chunk.values.slice(start, stop - start)


def document_lengths(col: pa.ChunkedArray) -> np.ndarray:
    """Tokens per row (document) of a list column, from its offsets only."""
    import pyarrow.compute as pc

    return pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)


def block_documents(lengths: np.ndarray, block_size: int, n_blocks: int) -> np.ndarray:
    """The document of each block of the concatenation: the one its first token belongs to.

    Document d holds the stream's tokens [ends[d-1], ends[d]) with ends = cumsum(lengths), so block b,
    starting at token b * block_size, starts in the first document whose end lies beyond that start
    (searchsorted, side="right": a block starting exactly at a boundary belongs to the next document;
    empty documents end where they start and never match). A block spanning a boundary carries the
    earlier document's id although its tail is the next document's start (scored with the earlier one as
    context): every block must be one unit of one document for the document bootstrap, at most one block
    per boundary is mixed, and a document shorter than a block may own no block at all.
    """
    starts = np.arange(n_blocks, dtype=np.int64) * block_size
    return np.searchsorted(np.cumsum(lengths, dtype=np.int64), starts, side="right").astype(np.int64)


def concat_blocks(col: pa.ChunkedArray, block_size: int) -> pa.Table:
    """Concatenate-and-chunk a list<int> column into a table of a fixed_size_list<int, block_size> column,
    `input_ids` (one record batch per run of whole blocks within an input batch, plus one per straddling
    block), and each block's `doc` and `pos` (block_documents, the block's index)."""
    pieces, carry, have = [], [], 0  # carry: the value slices of the partial block so far
    for chunk in col.chunks:
        vals = _values(chunk)
        pos = 0
        if have:  # finish the block the previous record batches started
            pos = min(block_size - have, len(vals))
            carry.append(vals.slice(0, pos))
            have += pos
            if have < block_size:
                continue
            pieces.append(pa.concat_arrays(carry))
            carry, have = [], 0
        n = (len(vals) - pos) // block_size
        if n:
            pieces.append(vals.slice(pos, n * block_size))
        rest = len(vals) - pos - n * block_size
        if rest:
            carry, have = [vals.slice(len(vals) - rest)], rest
    typ = pa.list_(col.type.value_type, block_size)
    blocks = pa.chunked_array([pa.FixedSizeListArray.from_arrays(p, block_size) for p in pieces], type=typ)
    n = len(blocks)
    return pa.table({"input_ids": blocks, "doc": block_documents(document_lengths(col), block_size, n),
                     "pos": np.arange(n, dtype=np.int64)})


def count_values(col: pa.ChunkedArray) -> int:
    """Total number of list elements (tokens) in a list column, read from offsets only."""
    return sum(c.offsets[len(c)].as_py() - c.offsets[0].as_py() for c in col.chunks)


def sample_blocks(table: pa.Table, cap: int, seed: int) -> pa.Table:
    """A seeded random subset of `cap` rows in their original order (cap 0 keeps all)."""
    if cap == 0 or cap >= len(table):
        return table
    return table.take(np.sort(np.random.default_rng(seed).choice(len(table), size=cap, replace=False)))


def blocks_table(blocks: np.ndarray) -> pa.Table:
    """(n, block_size) array -> Arrow table with a fixed-size-list `input_ids` column (zero copy)."""
    flat = pa.array(np.ascontiguousarray(blocks).reshape(-1))
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(flat, blocks.shape[1])})


# The validation sample does not follow `seed`, so runs that differ only in seed score the same blocks
# (paired comparisons, seed groups in `make compare`); the training sample does.
VALIDATION_SAMPLE_SEED = 0


def split_examples(task, tokens, pad_id: int) -> dict[str, pa.Table]:
    """Each tokenized split as the task's fixed-size examples, capped to chunk.max_<split>_blocks (a seeded
    random sample in original order; 0 keeps all)."""
    cp = task.p.chunk
    caps = {"train": cp.max_train_blocks, "validation": cp.max_validation_blocks}
    seeds = {"train": task.p.seed, "validation": VALIDATION_SAMPLE_SEED}
    return {split: sample_blocks(task.examples(ds, pad_id, f"data/tokens {split}"), caps[split], seeds[split])
            for split, ds in tokens.items()}
