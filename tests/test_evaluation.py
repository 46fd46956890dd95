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
