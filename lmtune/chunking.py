"""Concatenate-and-chunk, vectorised and streaming.

The blocks are a pure function of the token stream: the global concatenation of every document cut
every `block_size` tokens, last partial block dropped (as run_clm.py does). They never depend on how
the stream was batched, and memory stays bounded: we read the memory-mapped Arrow values batch by
batch and copy them into one preallocated array (100M uint16 tokens = 200 MB).
"""
import numpy as np
import pyarrow as pa


def group_blocks(ids: np.ndarray, block_size: int) -> np.ndarray:
    """Cut a flat token array into (n_blocks, block_size); the remainder (< block_size) is dropped."""
    n = len(ids) // block_size
    return ids[: n * block_size].reshape(n, block_size)


def _values(chunk: pa.ListArray) -> np.ndarray:
    # The flat child values of a list column, sliced to this chunk's offsets: zero-copy over the mmap.
    offsets = chunk.offsets
    start, stop = offsets[0].as_py(), offsets[len(chunk)].as_py()
    return chunk.values.slice(start, stop - start).to_numpy(zero_copy_only=False)


def blocks_from_table(table: pa.Table, column: str, block_size: int, dtype) -> np.ndarray:
    """Concatenate-and-chunk a list<int> column of an Arrow table into an (n, block_size) array."""
    col = table.column(column)
    total = count_values(col)
    n_blocks = total // block_size
    out = np.empty(n_blocks * block_size, dtype=dtype)
    pos = 0
    for chunk in col.chunks:
        vals = _values(chunk)
        take = min(len(vals), len(out) - pos)
        out[pos : pos + take] = vals[:take]
        pos += take
        if pos == len(out):
            break
    return out.reshape(n_blocks, block_size)


def count_values(col: pa.ChunkedArray) -> int:
    """Total number of list elements (tokens) in a list column, read from offsets only."""
    return sum(c.offsets[len(c)].as_py() - c.offsets[0].as_py() for c in col.chunks)


def sample_blocks(blocks: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """A seeded random subset of `cap` blocks in their original order (cap 0 keeps all)."""
    if cap == 0 or cap >= len(blocks):
        return blocks
    keep = np.sort(np.random.default_rng(seed).choice(len(blocks), size=cap, replace=False))
    return blocks[keep]


def blocks_table(blocks: np.ndarray) -> pa.Table:
    """(n, block_size) array -> Arrow table with a fixed-size-list `input_ids` column (zero copy)."""
    flat = pa.array(np.ascontiguousarray(blocks).reshape(-1))
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(flat, blocks.shape[1])})


def blocks_dataset(blocks: np.ndarray):
    """(n, block_size) array -> datasets.Dataset, with a fingerprint from a fast hash of the blocks.

    Left to itself, datasets.Dataset(table) fingerprints by pickling the whole table (100M tokens:
    +760 MB RSS and ~1 s, more than the chunking). The fingerprint is saved in state.json, so it must
    be deterministic or data/chunks would change on every run and retrain downstream.
    """
    import datasets
    import xxhash

    blocks = np.ascontiguousarray(blocks)
    h = xxhash.xxh3_128(f"blocks:{blocks.dtype.str}:{blocks.shape}".encode())
    h.update(memoryview(blocks.reshape(-1)).cast("B"))
    return datasets.Dataset(blocks_table(blocks), fingerprint=h.hexdigest()[:16])
