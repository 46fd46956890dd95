"""One module per task behind one contract (`lmtune.tasks.base.Task`); `task:` in params.yaml names the module.

- causal_lm (`causal_lm.py`): one `text` per record; concatenate-and-chunk or pad/truncate per example.
- instruction (`instruction.py`): `prompt` + `response`; the loss sees only the response and its eos.
- chat (`chat.py`): `messages` of {role, content}, rendered with the tokenizer's own chat template; the loss
  sees the assistant turns and their end-of-turn token only.
- classification (`classification.py`): `text` (+ `text_pair`) + integer `label`; a sequence-classification
  head on the base LM.

A task module is imported only when it runs (`get`), so a stage depends on `base.py` and the one module its
`task:` names (dvc.yaml: `lmtune/tasks/${task}.py`), never on the other tasks. No module outside this package
compares task names (tests/test_tasks.py scans for it). Each task's own params are the params.yaml section
named after it, validated by the module's `Settings` schema when the task loads. A new task is one module
defining `TASK` and `Settings`, its name added to `lmtune.params.TASKS` and a `TaskSection` field of
`lmtune.params.Params`, and its section in params.yaml.
"""
import importlib
from pathlib import Path

from pydantic import ValidationError

from lmtune import params, paths
from lmtune.params import TASKS as NAMES
from lmtune.tasks.base import Task, ranking


def get(name: str) -> type[Task]:
    """The task class `name` names (its declarations: head, metrics, block columns), imported now."""
    if name not in NAMES:
        raise KeyError(f"unknown task {name!r}; known: {list(NAMES)}")
    return importlib.import_module(f"lmtune.tasks.{name}").TASK


def _settings(name: str, section):
    """(task `name`'s own params section validated or None, its problems each naming its key)."""
    try:
        return get(name).Settings.model_validate(section), []
    except ValidationError as e:
        return None, params.problems(e, name)


def section_problems(name: str, section) -> list[str]:
    """The problems of task `name`'s own params section, each naming its key (`chat.role_key: missing`)."""
    return _settings(name, section)[1]


def load(p, source: str = "params.yaml") -> Task:
    """The task `p.task` names, bound to the params; its section's problems and its cross-section checks
    fail here in one line."""
    cls = get(p.task)
    settings, problems = _settings(p.task, getattr(p, p.task))
    if problems := problems + cls.problems(p):
        params.refuse(problems, source)
    return cls(p, settings)


def load_params(path: Path = paths.PARAMS) -> tuple[params.Params, Task]:
    """params.yaml and the task it names (see `validate`)."""
    return validate(params.read(path), Path(path).name)


def validate(raw: dict, source: str = "params.yaml") -> tuple[params.Params, Task]:
    """A params mapping and the task it names: every problem of the shared sections and of the task's own
    section in one UserError, each naming its key."""
    try:
        return (p := params.Params.model_validate(raw)), load(p, source)
    except ValidationError as e:
        problems = params.problems(e)
    name = raw.get("task")
    if name in NAMES and isinstance(raw.get(name), dict):  # a missing or malformed section is reported above
        problems += section_problems(name, raw[name])
    params.refuse(problems, source)


__all__ = ["NAMES", "Task", "get", "load", "load_params", "ranking", "section_problems", "validate"]
