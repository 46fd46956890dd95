"""One module per task behind one interface (`lmtune.tasks.base.Task`), and the registry `task:` names.

- causal_lm (`causal_lm.py`): one `text` per record; concatenate-and-chunk or pad/truncate per example.
- instruction (`instruction.py`): `prompt` + `response`; the loss sees only the response and its eos.
- chat (`chat.py`): `messages` of {role, content}; rendered with the tokenizer's chat template, the loss sees
  the assistant turns and their end-of-turn token only.
- classification (`classification.py`): `text` (+ `text_pair`) + integer `label`; a sequence-classification
  head on the base LM.

Stages and the library ask the task object (`tasks.get(p.task)`); no module outside this package compares
task names (tests/test_tasks.py scans for it). A fourth task is one new module plus one registry line.
"""
from lmtune.tasks.base import (IGNORE_INDEX, Task, examples_table, fingerprint_extra, is_adapter, pack_examples,
                               pad_examples)
from lmtune.tasks.causal_lm import CausalLM
from lmtune.tasks.chat import Chat
from lmtune.tasks.classification import Classification
from lmtune.tasks.instruction import Instruction

REGISTRY: dict[str, Task] = {t.name: t for t in (CausalLM(), Instruction(), Chat(), Classification())}
NAMES = tuple(REGISTRY)


def get(name: str) -> Task:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {list(NAMES)}") from None


__all__ = ["IGNORE_INDEX", "NAMES", "REGISTRY", "Task", "examples_table", "fingerprint_extra", "get", "is_adapter",
           "pack_examples", "pad_examples"]
