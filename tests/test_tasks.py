"""The task registry and the contract: every task implements the one narrow interface, task modules are
imported only when run (so params validation and the other tasks' stages never load them), and no module
outside lmtune/tasks/ branches on a task name (a source scan: it guards where per-task code lives)."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from lmtune import params, tasks
from lmtune.tasks.base import Head, Metric, Task

HOOKS = [n for n, v in vars(Task).items() if (callable(v) or isinstance(v, classmethod)) and not n.startswith("_")
         and n != "Settings"]
DECLARATIONS = ["name", "title", "head", "metrics", "block_columns", "Settings"]


def test_registry_covers_the_params_schema():
    modules = {f.stem for f in (ROOT / "lmtune/tasks").glob("*.py")} - {"__init__", "base"}
    assert set(tasks.NAMES) == modules and {"causal_lm", "instruction", "classification"} <= modules
    assert params.Params.model_fields["task"].annotation.__args__ == tasks.NAMES
    with pytest.raises(KeyError, match="known"):
        tasks.get("summarization")


def test_the_contract_is_narrow():
    # what a task says: 6 declarations (its own params schema among them) and 11 hooks
    assert HOOKS == ["problems", "source_fields", "flatten_record", "keep_flat", "document_text", "token_features",
                     "tokenize_batch", "examples", "model_kwargs", "prompt", "evaluate"]
    assert len(HOOKS) + len(DECLARATIONS) == 17


@pytest.mark.parametrize("name", tasks.NAMES)
def test_every_task_implements_the_contract(name):
    cls = tasks.get(name)
    assert cls.name == name and cls.title and isinstance(cls.head, Head)
    # its own params: a strict schema of its own, for the params.yaml section named after it
    assert cls.Settings is not getattr(Task, "Settings", None) and cls.Settings.model_config["extra"] == "forbid"
    assert name in params.Params.model_fields
    assert all(isinstance(m, Metric) for m in cls.metrics) and sum(m.ranks for m in cls.metrics) == 1
    assert tasks.ranking(cls).higher_is_better is not None  # ranks by a score, not a count
    shared, per_model = cls.block_columns
    assert per_model and all(isinstance(c, str) for c in shared + per_model)
    for hook in ("source_fields", "flatten_record", "keep_flat", "token_features", "tokenize_batch", "examples",
                 "evaluate"):
        assert getattr(cls, hook) is not getattr(Task, hook), f"{name} does not implement {hook}"
    # nothing beyond the contract: no public attribute a task adds that the base does not declare
    extra = {n for n in vars(cls) if not n.startswith("_")} - set(HOOKS) - set(DECLARATIONS)
    assert not extra, f"{name} adds {sorted(extra)} to the contract"


def test_params_validation_and_the_registry_import_no_task_module():
    code = ("import sys; from lmtune import params, tasks; params.load(); "
            "print(sorted(m for m in sys.modules if m.startswith('lmtune.tasks.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['lmtune.tasks.base']"
    code = ("import sys; from lmtune import params, tasks; tasks.load(params.load()); "
            "print(sorted(m for m in sys.modules if m.startswith('lmtune.tasks.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"['lmtune.tasks.base', 'lmtune.tasks.{params.load().task}']"  # the one it runs


NAME = "|".join(tasks.NAMES)
# A task variable compared with a literal (a name, or a collection of names), either way round, or a task name as
# a mapping key. Comparing two runs' tasks with each other (compare keeps one task's runs) names no task.
BRANCH = re.compile(rf"""(task\w*\s*(==|!=|\bin\b|\bnot in\b)\s*["'(\[{{]|["')\]}}]\s*(==|!=)\s*\w*\.?task\w*\b)"""
                    rf"""|["'](?:{NAME})["']\s*(==|!=|:)""")


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
                 'TITLES = {"causal_lm": "causal language model"}', 'if p.task in ("chat", "instruction"):',
                 'if "classification" == p.task:'):
        assert BRANCH.search(line), line
    assert not BRANCH.search("runs = [r for r in runs if r.task == first]")
