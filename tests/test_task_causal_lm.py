"""lmtune/tasks/causal_lm.py: flatten nested fields, tokenize with eos between documents, chunk by concat or pad."""
import numpy as np
import pytest

from lmtune.errors import UserError
from task_helpers import EOS, bound, ds, tok  # noqa: F401 (fixtures)


def chunked(split, mode, block_size):
    return bound("causal_lm", chunk={"mode": mode, "block_size": block_size}).examples(split, EOS, "here")


def test_flatten_eli5_nested_answers():
    rec = {"title": "Why?", "answers": {"a_id": ["a", "b"], "text": ["First answer.", "Second one."], "score": [3, 1]}}
    lm = bound("causal_lm", causal_lm={"text_fields": ["answers.text"], "joiner": " "})
    assert lm.flatten_record(rec) == {"text": "First answer. Second one."}
    assert lm.source_fields() == ["answers.text"]
    assert not lm.keep_flat({"text": " \n"}) and lm.keep_flat({"text": "x"})


def test_tokenize_puts_eos_after_each_document(tok):
    out = bound("causal_lm", tokenize={"eos_between_documents": True}).tokenize_batch(tok, {"text": ["Hello world.", "Bye."]})
    assert [list(x) for x in out["input_ids"]] == [tok("Hello world.")["input_ids"] + [EOS], tok("Bye.")["input_ids"] + [EOS]]
    out = bound("causal_lm", tokenize={"eos_between_documents": False}).tokenize_batch(tok, {"text": ["Bye."]})
    assert [list(x) for x in out["input_ids"]] == [tok("Bye.")["input_ids"]]


def test_chunk_concat_is_the_global_cut_and_pad_is_per_document():
    feats = bound("causal_lm").token_features(np.dtype(np.uint16))
    split = ds({"input_ids": [[1, 2, 3], [4, 5, 6, 7, 8]]}, feats)
    blocks = chunked(split, "concat", 3)
    assert blocks.column("input_ids").to_pylist() == [[1, 2, 3], [4, 5, 6]]  # 8 tokens -> 2 blocks, remainder dropped
    padded = chunked(split, "pad", 4)
    assert padded.column("input_ids").to_pylist() == [[1, 2, 3, EOS], [4, 5, 6, 7]]
    assert padded.column("labels").to_pylist() == [[1, 2, 3, -100], [4, 5, 6, 7]]
    with pytest.raises(UserError, match="here: 8 tokens, fewer than one block of chunk.block_size=9"):
        chunked(split, "concat", 9)


def test_chunk_pad_drops_documents_with_nothing_to_predict():
    feats = bound("causal_lm").token_features(np.dtype(np.uint16))
    with pytest.raises(UserError, match="no example left with a token to learn"):
        chunked(ds({"input_ids": [[7]]}, feats), "pad", 4)


def test_token_metrics_are_the_language_model_tasks_scores():
    """Loss, perplexity and next-token accuracy: the keys evaluate writes, how each prints, which one ranks runs,
    how the paired comparison recomputes the loss from blocks.csv, and the card's names for the scored tokens."""
    from lmtune import tasks
    from lmtune.tasks import base

    loss, ppl, acc = base.token_metrics("response")
    assert [(m.key, m.label, m.fmt, m.higher_is_better) for m in (loss, ppl, acc)] == [
        ("loss", "loss", ".4f", False), ("perplexity", "perplexity", ".2f", False),
        ("accuracy", "next-token accuracy", ".4f", True)]
    assert [m.ranks for m in (loss, ppl, acc)] == [False, True, False]
    assert (loss.per_unit, ppl.per_unit, acc.per_unit) == (("nll", "n_tokens"), None, None)
    assert (loss.hub, ppl.hub, acc.hub) == (None, ("perplexity", "Perplexity (response tokens)"),
                                            ("accuracy", "Next-token accuracy (response tokens)"))
    assert all(m.hub_args == () for m in (loss, ppl, acc))
    for name, word in (("causal_lm", "text"), ("instruction", "response"), ("chat", "assistant")):
        assert tasks.get(name).metrics[:3] == base.token_metrics(word), name
