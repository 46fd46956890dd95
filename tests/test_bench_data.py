"""The data path the benchmark measures: fast-tokenizer ids, checked compact dtypes, chunk datasets,
and the bench's own chunk helpers on a tiny corpus (no timing is asserted anywhere)."""
import numpy as np
import pytest

from lmtune.data import text
from lmtune.errors import UserError


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory):
    from lmtune.models.gpt2_bpe import build_gpt2_tokenizer

    return build_gpt2_tokenizer(tmp_path_factory.mktemp("bpe"))


TEXTS = ["Mr. Speaker, Mr. Vice President,\nMembers of Congress:", "", "  The state of our Union is strong.  ", "élan 1789"]


def test_backend_ids_equal_the_tokenizer_call(gpt2_tokenizer):
    expected = gpt2_tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    got = text.tokenize_texts(gpt2_tokenizer, TEXTS, eos_id=50256, dtype=np.uint16)
    assert [x.tolist() for x in got] == [e + [50256] for e in expected]
    assert all(x.dtype == np.uint16 for x in got)


def test_ids_that_do_not_fit_the_dtype_raise_instead_of_wrapping():
    class Tok:  # no fast backend: the __call__ path
        def __call__(self, texts, **kw):
            return {"input_ids": [[1, 70000] for _ in texts]}

    with pytest.raises(UserError, match="uint16"):
        text.tokenize_texts(Tok(), ["a"], eos_id=None, dtype=np.uint16)
    assert text.tokenize_texts(Tok(), ["a"], eos_id=None, dtype=np.uint32)[0].tolist() == [1, 70000]


def test_datasets_features_cast_rejects_out_of_range_ids():
    # stages/tokenize.py declares List(Value(uint16)) features: an int64 id >= 2**16 fails the cast.
    import datasets
    import pyarrow as pa

    ds = datasets.Dataset.from_dict({"text": ["a"]})
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("uint16"))})
    with pytest.raises(pa.ArrowInvalid):
        ds.map(lambda b: {"input_ids": [np.array([1, 70000])]}, batched=True, remove_columns=["text"],
               features=features, keep_in_memory=True)


def test_bench_chunk_matches_the_global_cut_and_baseline_drops_batch_remainders(tmp_path):
    from bench import chunk

    tokens = chunk.make_tokens(tmp_path / "tokens", 50_000, mean_len=20)
    digest, n = chunk.global_cut_digest(tokens, 64)
    ours = chunk.ours(tokens, 64, tmp_path / "out")
    assert (ours["digest"], ours["n_blocks"], ours["dtype"]) == (digest, n, "uint16")
    _, base_n, base_digest = chunk.baseline(tokens, 64, "chain")()
    assert base_n <= n  # run_clm's per-batch cut loses up to one partial block per batch of 1000 documents
    _, sum_n, sum_digest = chunk.baseline(tokens, 64, "sum")()
    assert (sum_n, sum_digest) == (base_n, base_digest)
