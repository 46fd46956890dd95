"""The task registry and the layout rule: every task implements the one interface, and no module outside
lmtune/tasks/ branches on a task name (a source scan: it guards where per-task code lives, not behaviour)."""
import re

import pytest

from conftest import ROOT
from lmtune import params, tasks
from lmtune.tasks.base import Task

INTERFACE = [n for n, v in vars(Task).items() if callable(v) and not n.startswith("_")]


def test_registry_covers_the_params_schema():
    assert set(tasks.NAMES) == {"causal_lm", "instruction", "chat", "classification"}
    assert params.Params.model_fields["task"].annotation.__args__ == tasks.NAMES
    with pytest.raises(KeyError, match="known"):
        tasks.get("summarization")


@pytest.mark.parametrize("name", tasks.NAMES)
def test_every_task_implements_the_interface(name):
    task = tasks.get(name)
    assert task.name == name and task.title and task.flat_columns and task.peft_task_type
    key, higher = task.primary_metric
    assert isinstance(key, str) and isinstance(higher, bool)
    # every method that the base leaves abstract is overridden somewhere in the task's class chain
    for method in INTERFACE:
        impl = getattr(type(task), method)
        if impl is getattr(Task, method):
            try:
                impl(task, *([None] * (impl.__code__.co_argcount - 1)))
            except NotImplementedError:
                pytest.fail(f"{name} does not implement {method}")
            except Exception:
                pass  # has a shared default that ran on dummy arguments


NAME = "|".join(tasks.NAMES)
BRANCH = re.compile(rf"""(task\w*\s*(==|!=|\bin\b|\bnot in\b)|(==|!=)\s*task\w*\b)|["'](?:{NAME})["']\s*(==|!=|:)""")


def test_no_module_outside_the_package_branches_on_a_task_name():
    offenders = []
    for folder in ("lmtune", "stages", "bench"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            if "tasks" in f.relative_to(ROOT).parts[:2]:
                continue
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if BRANCH.search(line.split("#")[0]):
                    offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "per-task code belongs in lmtune/tasks/:\n" + "\n".join(offenders)


def test_the_scan_sees_a_branch():
    # Control for the scan above: the shapes of code the original modules had must match.
    for line in ('if task == "classification":', "if p.task != 'causal_lm' or mode == 'pad':",
                 'TITLES = {"causal_lm": "causal language model"}'):
        assert BRANCH.search(line), line
