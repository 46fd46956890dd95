"""Fixtures shared by the per-task unit tests (tests/test_task_*.py)."""
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT
from lmtune import params
from lmtune.models.gpt2_bpe import build_gpt2_tokenizer

EOS = 50256  # GPT-2's <|endoftext|>, the last id of its 50,257-token vocabulary


@pytest.fixture(scope="module")
def tok():
    with tempfile.TemporaryDirectory() as tmp:
        t = build_gpt2_tokenizer(Path(tmp))
    t.pad_token = t.eos_token
    return t


@pytest.fixture(scope="module")
def fp():
    """params.yaml's `instruction:` section, validated (the prompt templates)."""
    from lmtune.tasks import instruction

    return instruction.Settings.model_validate(params.load(ROOT / "params.yaml").instruction)


def flat(fp, **changes):
    return fp.model_copy(update=changes)


def ds(cols, features):
    import datasets

    return datasets.Dataset.from_dict(cols, features=features)


def bound(name: str, **sections):
    """The task `name` bound to params.yaml with some sections changed, e.g. bound("classification",
    classification={"label_names": ["neg", "pos"]}, chunk={"mode": "pad", "block_size": 8})."""
    from lmtune import tasks

    p = params.load(ROOT / "params.yaml")
    changes = {"task": name, **{k: {**current, **v} if isinstance(current := getattr(p, k), dict)  # a task's section
                                else current.model_copy(update=v) for k, v in sections.items()}}
    return tasks.get(name)(p.model_copy(update=changes))
