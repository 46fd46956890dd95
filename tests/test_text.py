"""Flattening records to text, and token dtypes."""
import numpy as np
import pytest

from lmtune.data import text
from lmtune.errors import UserError

ELI5 = {  # the eli5_category schema: answers is a dict of parallel lists
    "q_id": "5lchat", "title": "Why do we sleep?", "selftext": "",
    "answers": {"a_id": ["a1", "a2"], "text": ["Because rest.", "Brains clean up."], "score": [3, 1],
                "text_urls": [[], []]},
}


def test_nested_list_field_is_flattened_and_joined():
    assert text.flatten_record(ELI5, ["answers.text"], " ") == "Because rest. Brains clean up."
    assert text.flatten_record(ELI5, ["title", "answers.text"], "\n") == "Why do we sleep?\nBecause rest.\nBrains clean up."


def test_list_of_dicts_maps_the_path():
    rec = {"turns": [{"text": "a"}, {"text": "b"}]}
    assert text.flatten_record(rec, ["turns.text"], "|") == "a|b"


def test_line_breaks_are_kept():
    assert text.flatten_record({"text": " = Valkyria = \n"}, ["text"], "") == " = Valkyria = \n"


def test_missing_field_raises_keyerror_naming_it():
    with pytest.raises(KeyError, match="answers.body"):
        text.flatten_record(ELI5, ["answers.body"], " ")


def test_check_columns_names_the_missing_one():
    with pytest.raises(UserError, match=r"missing column\(s\) \['answers'\]"):
        text.check_columns(["title", "q_id"], ["answers.text"], "data/raw train")


def test_token_dtype_by_vocab_size():
    assert text.token_dtype(50257) == np.uint16
    assert text.token_dtype(65536) == np.uint16
    assert text.token_dtype(65537) == np.uint32


def test_tokenize_texts_appends_eos():
    class Tok:
        def __call__(self, texts, **kw):
            return {"input_ids": [[ord(c) for c in t] for t in texts]}
    ids = text.tokenize_texts(Tok(), ["ab", "c"], eos_id=0)
    assert [list(x) for x in ids] == [[97, 98, 0], [99, 0]]
    assert [list(x) for x in text.tokenize_texts(Tok(), ["ab"], eos_id=None)] == [[97, 98]]
