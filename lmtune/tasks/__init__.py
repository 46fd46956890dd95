"""One module per task behind one contract (`lmtune.tasks.base.Task`); `task:` in params.yaml names the module.

- causal_lm (`causal_lm.py`): one `text` per record; concatenate-and-chunk or pad/truncate per example.
- instruction (`instruction.py`): `prompt` + `response`; the loss sees only the response and its eos.
- chat (`chat.py`): `messages` of {role, content}, rendered with the tokenizer's own chat template; the loss
  sees the assistant turns and their end-of-turn token only.
- classification (`classification.py`): `text` (+ `text_pair`) + integer `label`; a sequence-classification
  head on the base LM.

A task module is imported only when it runs (`get`), so a stage depends on `base.py` and the one module its
`task:` names (dvc.yaml: `lmtune/tasks/${task}.py`), never on the other tasks. No module outside this package
compares task names (tests/test_tasks.py scans for it). A new task is one module defining `TASK`, its name
added to `lmtune.params.TASKS`.
"""
import importlib

from lmtune.errors import UserError
from lmtune.params import TASKS as NAMES
from lmtune.tasks.base import Task, fingerprint_extra, ranking


def get(name: str) -> type[Task]:
    """The task class `name` names (its declarations: head, metrics, block columns), imported now."""
    if name not in NAMES:
        raise KeyError(f"unknown task {name!r}; known: {list(NAMES)}")
    return importlib.import_module(f"lmtune.tasks.{name}").TASK


def load(p, source: str = "params.yaml") -> Task:
    """The task `p.task` names, bound to the params; its cross-section checks fail here in one line."""
    task = get(p.task)(p)
    if problems := task.problems():
        raise UserError(f"{source}: {len(problems)} problem(s): " + "; ".join(problems))
    return task


__all__ = ["NAMES", "Task", "fingerprint_extra", "get", "load", "ranking"]
