"""Concatenate-and-chunk: exact blocks, remainder dropped, independent of how the stream is batched."""
import numpy as np
import pyarrow as pa
import pytest

from lmtune import chunking


def docs_table(docs, batch_sizes):
    """The same documents split into Arrow record batches of the given sizes (as datasets.map would)."""
    arr_type = pa.list_(pa.uint16())
    batches, i = [], 0
    for n in batch_sizes:
        batches.append(pa.array(docs[i:i + n], type=arr_type))
        i += n
    assert i == len(docs)
    return pa.table({"input_ids": pa.chunked_array(batches, type=arr_type)})


def test_group_blocks_drops_remainder():
    blocks = chunking.group_blocks(np.arange(10), 4)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_blocks_equal_global_concatenate_and_cut():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50000, rng.integers(1, 40)).tolist() for _ in range(101)]
    flat = np.array([t for d in docs for t in d], dtype=np.uint16)
    expected = flat[: len(flat) // 16 * 16].reshape(-1, 16)
    for sizes in ([101], [1] * 101, [50, 51], [7] * 14 + [3]):
        got = chunking.blocks_from_table(docs_table(docs, sizes), "input_ids", 16, np.uint16)
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.uint16


def test_sliced_table_reads_only_its_rows():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    table = docs_table(docs, [3]).slice(1, 2)  # a datasets.select/shard shares the parent's buffers
    assert chunking.count_values(table.column("input_ids")) == 6
    np.testing.assert_array_equal(chunking.blocks_from_table(table, "input_ids", 3, np.uint16), [[4, 5, 6], [7, 8, 9]])


def test_fewer_tokens_than_one_block_gives_no_blocks():
    assert chunking.blocks_from_table(docs_table([[1, 2]], [1]), "input_ids", 4, np.uint16).shape == (0, 4)


def test_sample_blocks_is_seeded_and_ordered():
    blocks = np.arange(40).reshape(20, 2)
    a = chunking.sample_blocks(blocks, 5, seed=1)
    np.testing.assert_array_equal(a, chunking.sample_blocks(blocks, 5, seed=1))
    assert len(a) == 5 and (np.diff(a[:, 0]) > 0).all()
    assert chunking.sample_blocks(blocks, 0, seed=1) is blocks


def test_blocks_table_roundtrip():
    blocks = np.arange(12, dtype=np.uint16).reshape(3, 4)
    table = chunking.blocks_table(blocks)
    assert table.column("input_ids").type == pa.list_(pa.uint16(), 4)
    assert table.column("input_ids").to_pylist()[2] == [8, 9, 10, 11]
