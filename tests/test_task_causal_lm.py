"""lmtune/tasks/causal_lm.py: flatten nested fields, tokenize with eos between documents, chunk by concat or pad."""
import numpy as np
import pytest

from lmtune import tasks
from lmtune.errors import UserError
from task_helpers import EOS, ds, flat, fp, tok  # noqa: F401 (fixtures)

LM = tasks.get("causal_lm")


def test_flatten_eli5_nested_answers(fp):
    rec = {"title": "Why?", "answers": {"a_id": ["a", "b"], "text": ["First answer.", "Second one."], "score": [3, 1]}}
    out = LM.flatten_record(flat(fp, text_fields=["answers.text"], joiner=" "), rec)
    assert out == {"text": "First answer. Second one."}
    assert LM.source_fields(flat(fp, text_fields=["answers.text"])) == ["answers.text"]
    assert not LM.keep_flat({"text": " \n"}) and LM.keep_flat({"text": "x"})


def test_tokenize_puts_eos_after_each_document(tok):
    out = LM.tokenize_batch(tok, {"text": ["Hello world.", "Bye."]}, EOS)
    assert [list(x) for x in out["input_ids"]] == [tok("Hello world.")["input_ids"] + [EOS], tok("Bye.")["input_ids"] + [EOS]]


def test_chunk_concat_is_the_global_cut_and_pad_is_per_document():
    feats = LM.token_features(np.dtype(np.uint16))
    split = ds({"input_ids": [[1, 2, 3], [4, 5, 6, 7, 8]]}, feats)
    blocks = LM.chunk(split, "concat", 3, EOS, "here")
    assert blocks.column("input_ids").to_pylist() == [[1, 2, 3], [4, 5, 6]]  # 8 tokens -> 2 blocks, remainder dropped
    padded = LM.chunk(split, "pad", 4, EOS, "here")
    assert padded.column("input_ids").to_pylist() == [[1, 2, 3, EOS], [4, 5, 6, 7]]
    assert padded.column("labels").to_pylist() == [[1, 2, 3, -100], [4, 5, 6, 7]]
    with pytest.raises(UserError, match="here: 8 tokens, fewer than one block of chunk.block_size=9"):
        LM.chunk(split, "concat", 9, EOS, "here")


def test_chunk_pad_drops_documents_with_nothing_to_predict():
    feats = LM.token_features(np.dtype(np.uint16))
    with pytest.raises(UserError, match="no example left with a token to learn"):
        LM.chunk(ds({"input_ids": [[7]]}, feats), "pad", 4, EOS, "data/tokens train")
