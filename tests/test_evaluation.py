"""lmtune.eval.evaluation: the ids of data/chunks (doc, pos) travel to the per-block files, never to the model."""
import csv
import io
import types

import numpy as np
import pytest
import torch

from lmtune import params, tasks
from lmtune.data import chunking
from lmtune.errors import UserError
from lmtune.eval import evaluation
from lmtune.io import save_tables


class Recorder(tasks.get("causal_lm")):
    """causal_lm's declarations; its evaluate records what it was given and scores each block by its first token."""

    def evaluate(self, model, blocks, *, tokenizer, autocast=None, desc=None):
        self.seen = blocks.column_names
        first = [int(row[0]) for row in blocks["input_ids"]]
        blocks = {"n_tokens": [3] * len(first), "n_bytes": first, "nll": [0.5 * t for t in first]}
        return {"loss": 1.0, "blocks": blocks}


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """Two documents (10 and 8 tokens) cut into blocks of 4 and saved as data/chunks; a stand-in model."""
    docs = [list(range(100, 110)), list(range(200, 208))]
    import pyarrow as pa

    col = pa.chunked_array([pa.array(docs, type=pa.list_(pa.uint16()))])
    table = chunking.concat_blocks(col, 4)
    save_tables({"train": table, "validation": table}, tmp_path / "chunks")
    monkeypatch.setattr(evaluation.paths, "CHUNKS", tmp_path / "chunks")
    monkeypatch.setattr(evaluation.loading, "load_model", lambda *a, **k: torch.nn.Linear(1, 1))
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    return Recorder(params.load())


def test_the_model_sees_no_ids_and_the_block_rows_carry_them(chunked):
    m, blocks = evaluation.evaluate(chunked, "base")
    assert "doc" not in chunked.seen and "pos" not in chunked.seen and "input_ids" in chunked.seen
    # tokens 100-109 then 200-207: blocks start at 100, 104, 108 (spans both: document 0's), 202, 206 is cut
    assert blocks["doc"] == [0, 0, 0, 1] and blocks["pos"] == [0, 1, 2, 3]
    rows = list(csv.DictReader(io.StringIO(evaluation.blocks_csv(chunked, {"base": blocks}))))
    assert list(rows[0]) == ["block", "doc", "pos", "n_tokens", "n_bytes", "base_nll"]
    assert [(r["doc"], r["pos"], r["n_bytes"]) for r in rows] == [("0", "0", "100"), ("0", "1", "104"),
                                                                   ("0", "2", "108"), ("1", "3", "202")]


def test_chunks_without_ids_are_refused_naming_the_stage_to_rerun():
    task = types.SimpleNamespace(block_columns=(("doc", "pos", "n_tokens"), ("nll",)))
    with pytest.raises(UserError, match=r"data/chunks: the validation split has no doc, pos column.*dvc repro chunk"):
        evaluation.unit_ids(task, ["input_ids"])
    assert evaluation.unit_ids(task, ["input_ids", "doc", "pos"]) == ("doc", "pos")


def test_base_rows_from_other_blocks_are_refused(chunked):
    _, blocks = evaluation.evaluate(chunked, "base")
    moved = {**blocks, "doc": list(np.roll(blocks["doc"], 1))}  # same counts, other documents
    with pytest.raises(UserError, match="evaluate_base"):
        evaluation.same_blocks(chunked, moved, blocks)


# ---- The per-block files: written, read back, checked ------------------------------------------------

LM_COLUMNS = types.SimpleNamespace(block_columns=(("doc", "n_tokens"), ("nll", "n_right")))


def test_blocks_csv_has_the_shared_columns_once_then_each_models():
    base = {"doc": [0, 1], "n_tokens": [3, 4], "nll": [0.1 + 0.2, 1.5], "n_right": [1, 2]}
    tuned = {"doc": [9, 9], "n_tokens": [9, 9], "nll": [1e-05, float("nan")], "n_right": [3, 0]}
    text = evaluation.blocks_csv(LM_COLUMNS, {"base": base, "tuned": tuned})
    # The shared columns come from the first model; floats as repr writes them, so the rows sum back exactly.
    assert text == ("block,doc,n_tokens,base_nll,base_n_right,tuned_nll,tuned_n_right\n"
                    "0,0,3,0.30000000000000004,1,1e-05,3\n"
                    "1,1,4,1.5,2,nan,0\n")


def test_blocks_csv_read_back_gives_the_shared_and_one_models_columns(tmp_path):
    base = {"doc": [0, 1], "n_tokens": [3, 4], "nll": [0.1 + 0.2, 2.0], "n_right": [1, 2]}
    tuned = {**base, "nll": [1e-05, float("nan")], "n_right": [3, 0]}
    path = tmp_path / "blocks.csv"
    path.write_text(evaluation.blocks_csv(LM_COLUMNS, {"base": base, "tuned": tuned}), encoding="utf-8")
    back = evaluation.read_blocks(path, LM_COLUMNS, "base")
    assert back == base and [type(v) for v in back["n_right"] + back["nll"]] == [int, int, float, float]
    tuned_back = evaluation.read_blocks(path, LM_COLUMNS, "tuned")
    assert tuned_back["nll"][0] == 1e-05 and np.isnan(tuned_back["nll"][1]) and tuned_back["n_right"] == [3, 0]
    assert list(tuned_back) == ["doc", "n_tokens", "nll", "n_right"]


def test_same_blocks_compares_the_shared_columns_and_the_count():
    task = types.SimpleNamespace(block_columns=(("doc",), ("nll",)))
    evaluation.same_blocks(task, {"doc": [0, 1], "nll": [1.0, 2.0]}, {"doc": [0, 1], "nll": [5.0, 6.0]})
    with pytest.raises(UserError, match=r"^metrics/blocks_base\.csv was measured on other validation blocks; "
                                        r"run `dvc repro evaluate_base`$"):
        evaluation.same_blocks(task, {"doc": [0, 2], "nll": [1.0, 2.0]}, {"doc": [0, 1], "nll": [5.0, 6.0]})
    no_shared = types.SimpleNamespace(block_columns=((), ("nll",)))
    evaluation.same_blocks(no_shared, {"nll": [1.0]}, {"nll": [2.0]})
    with pytest.raises(UserError, match="evaluate_base"):
        evaluation.same_blocks(no_shared, {"nll": [1.0]}, {"nll": [2.0, 3.0]})


def test_confusion_csv_has_one_row_per_example():
    m = {"support": {"neg": 3, "pos": 3}, "confusion_matrix": [[2, 1], [0, 3]]}
    assert evaluation.confusion_csv(m) == "actual,predicted\nneg,neg\nneg,neg\nneg,pos\npos,pos\npos,pos\npos,pos\n"
    assert evaluation.confusion_csv({"loss": 1.0}) == "actual,predicted\n"  # a language model: header only


def test_unit_ids_keep_the_tasks_order_and_only_the_id_columns():
    task = types.SimpleNamespace(block_columns=(("pos", "n_tokens", "doc"), ("nll",)))
    assert evaluation.unit_ids(task, ["doc", "pos", "input_ids"]) == ("pos", "doc")
    with pytest.raises(UserError, match=r"no pos column"):
        evaluation.unit_ids(task, ["doc"])
    assert evaluation.unit_ids(types.SimpleNamespace(block_columns=(("n_tokens",), ("nll",))), []) == ()
