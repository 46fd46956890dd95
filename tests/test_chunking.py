"""Concatenate-and-chunk: exact blocks, remainder dropped, independent of how the stream is batched."""
import numpy as np
import pyarrow as pa

from lmtune.data import chunking


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


def blocks_array(table: pa.Table) -> np.ndarray:
    col = table.column("input_ids")
    return np.asarray(col.to_pylist(), dtype=col.type.value_type.to_pandas_dtype()).reshape(-1, col.type.list_size)


def test_blocks_equal_global_concatenate_and_cut():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50000, rng.integers(1, 40)).tolist() for _ in range(101)]
    flat = np.array([t for d in docs for t in d], dtype=np.uint16)
    expected = flat[: len(flat) // 16 * 16].reshape(-1, 16)
    # One batch; one document per batch (blocks straddle many batches); uneven batches.
    for sizes in ([101], [1] * 101, [50, 51], [7] * 14 + [3]):
        got = chunking.concat_blocks(docs_table(docs, sizes).column("input_ids"), 16)
        assert got.column("input_ids").type == pa.list_(pa.uint16(), 16)
        np.testing.assert_array_equal(blocks_array(got), expected)


def test_whole_blocks_are_views_of_the_input_values():
    docs = [list(range(i * 10, i * 10 + 10)) for i in range(8)]
    table = docs_table(docs, [4, 4])
    got = chunking.concat_blocks(table.column("input_ids"), 8).column("input_ids")
    # 40 values per batch: 5 whole blocks of each batch, no block straddles; nothing copied.
    src = [c.values.buffers()[1].address for c in table.column("input_ids").chunks]
    assert [c.values.buffers()[1].address for c in got.chunks] == src
    assert len(got) == 10


def test_sliced_table_reads_only_its_rows():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]]
    table = docs_table(docs, [4]).slice(1, 2)  # a datasets.select/shard shares the parent's buffers
    assert chunking.count_values(table.column("input_ids")) == 6
    # Rows before and after the slice share its values buffer: neither [1, 2, 3] nor [10, 11] may leak in.
    np.testing.assert_array_equal(blocks_array(chunking.concat_blocks(table.column("input_ids"), 3)), [[4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(blocks_array(chunking.concat_blocks(table.column("input_ids"), 2)), [[4, 5], [6, 7], [8, 9]])


def test_fewer_tokens_than_one_block_gives_no_blocks():
    got = chunking.concat_blocks(docs_table([[1, 2]], [1]).column("input_ids"), 4)
    assert len(got) == 0 and got.column("input_ids").type == pa.list_(pa.uint16(), 4)


def test_uint32_ids_keep_their_dtype():
    arr = pa.array([[70000, 1, 2], [3]], type=pa.list_(pa.uint32()))
    got = chunking.concat_blocks(pa.chunked_array([arr]), 2)
    assert got.column("input_ids").type == pa.list_(pa.uint32(), 2)
    assert got.column("input_ids").to_pylist() == [[70000, 1], [2, 3]]


def test_sample_blocks_is_seeded_and_ordered():
    table = chunking.blocks_table(np.arange(40).reshape(20, 2))
    a = chunking.sample_blocks(table, 5, seed=1)
    assert a.equals(chunking.sample_blocks(table, 5, seed=1))
    firsts = [row[0] for row in a.column("input_ids").to_pylist()]
    assert len(a) == 5 and firsts == sorted(firsts)
    # Without replacement: 15 of 20 distinct rows (with replacement, 15 draws repeat one almost surely).
    many = [row[0] for row in chunking.sample_blocks(table, 15, seed=1).column("input_ids").to_pylist()]
    assert len(set(many)) == 15 and many == sorted(many)
    assert chunking.sample_blocks(table, 0, seed=1) is table
    assert chunking.sample_blocks(table, 20, seed=1) is table


def test_blocks_table_roundtrip():
    blocks = np.arange(12, dtype=np.uint16).reshape(3, 4)
    table = chunking.blocks_table(blocks)
    assert table.column("input_ids").type == pa.list_(pa.uint16(), 4)
    assert table.column("input_ids").to_pylist()[2] == [8, 9, 10, 11]


# ---- where each block came from: doc (the document of its first token) and pos ----------------------------

def test_block_documents_on_a_tiny_token_table():
    # Documents of 5, 3, 0, 4 and 6 tokens: the stream's tokens 0-4 are document 0, 5-7 document 1, 8-11
    # document 3 (2 is empty), 12-17 document 4. Blocks of 4 start at tokens 0, 4, 8, 12 (16 starts the
    # dropped remainder).
    lengths = np.array([5, 3, 0, 4, 6])
    docs = chunking.block_documents(lengths, 4, 4)
    # block 1 (tokens 4-7) spans documents 0 and 1: it carries 0, its first token's; block 2 starts exactly
    # where document 1 ends (token 8): it is document 3's, not the empty document 2's; block 3 likewise at 12.
    assert docs.tolist() == [0, 0, 3, 4]
    assert docs.dtype == np.int64


def test_concat_blocks_record_each_blocks_document_and_position_whatever_the_batching():
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 50000, rng.integers(0, 40)).tolist() for _ in range(61)]
    # the document of every token of the concatenation, one by one
    token_doc = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    n = len(token_doc) // 16
    for sizes in ([61], [1] * 61, [30, 31], [7] * 8 + [5]):
        got = chunking.concat_blocks(docs_table(docs, sizes).column("input_ids"), 16)
        assert got.column_names == ["input_ids", "doc", "pos"]
        assert got.column("doc").to_pylist() == token_doc[np.arange(n) * 16].tolist()
        assert got.column("pos").to_pylist() == list(range(n))
    assert len(set(got.column("doc").to_pylist())) > 10  # the case is not trivial: many documents own blocks


def test_sampled_blocks_keep_their_document_and_position():
    docs = [list(range(i * 10, i * 10 + 10)) for i in range(8)]  # 80 tokens, documents of 10
    blocks = chunking.sample_blocks(chunking.concat_blocks(docs_table(docs, [8]).column("input_ids"), 4), 5, seed=3)
    for ids, doc, pos in zip(*(blocks.column(c).to_pylist() for c in ("input_ids", "doc", "pos"))):
        assert ids[0] == pos * 4 and doc == ids[0] // 10  # token values are their stream positions here


def test_split_examples_caps_each_split_with_its_own_seed():
    import types

    made = []

    def examples(ds, pad_id, where):
        made.append((ds, pad_id, where))
        return pa.table({"i": np.arange(40) + (1000 if ds == "V" else 0)})

    p = types.SimpleNamespace(seed=7, chunk=types.SimpleNamespace(max_train_blocks=5, max_validation_blocks=3))
    task = types.SimpleNamespace(p=p, examples=examples)
    out = chunking.split_examples(task, {"train": "T", "validation": "V"}, 9)
    assert made == [("T", 9, "data/tokens train"), ("V", 9, "data/tokens validation")]
    full = {s: examples(ds, 9, "") for s, ds in (("train", "T"), ("validation", "V"))}
    assert out["train"].equals(chunking.sample_blocks(full["train"], 5, 7))
    # The validation sample does not move with the training seed: runs that differ only in seed score the same blocks.
    assert out["validation"].equals(chunking.sample_blocks(full["validation"], 3, chunking.VALIDATION_SAMPLE_SEED))
    assert chunking.VALIDATION_SAMPLE_SEED != 7 and len(out["validation"]) == 3
    assert not chunking.sample_blocks(full["train"], 5, 7).equals(chunking.sample_blocks(full["train"], 5, 0))


def test_document_lengths_are_int64():
    lengths = chunking.document_lengths(pa.chunked_array([pa.array([[1, 2, 3], []], type=pa.list_(pa.uint16()))]))
    assert lengths.dtype == np.int64 and lengths.tolist() == [3, 0]
