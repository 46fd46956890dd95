"""dvc.yaml's rules: each stage runs `python -m stages.<name>` and declares every lmtune module it imports.

Two checks: a static one over module-level imports (what importing the stage loads), and a real one: the
tiny pipeline's `dvc repro` runs every stage with PYTHONPROFILEIMPORTTIME=1 (tests/conftest.py), so each
stage's stderr names every lmtune module it imported while it ran, lazy imports inside functions included
(e.g. the task modules import lmtune.eval.metrics only when a model is evaluated, so download need not list it).
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from lmtune.params import TASKS

STAGES = ["download", "flatten", "tokenize", "chunk", "train", "evaluate_base", "evaluate", "base_samples", "export",
          "harness_data", "harness_base", "harness"]


def _module_level(tree):
    """Statements that run on import: the module body, into if/try/with blocks, not into functions or classes'
    methods (a function's imports run only when it is called: the real-run check covers those)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += [n for field in ("body", "orelse", "finalbody", "handlers") for n in getattr(node, field, [])]
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body


OURS = ("lmtune", "stages")


def lmtune_imports(path: Path) -> set[str]:
    """Project modules (lmtune, stages) a file imports when it is imported (module level); `from pkg import
    name` counts the module pkg.name when there is one."""
    found = set()
    for node in _module_level(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OURS:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}").is_file()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in OURS}
    return found


def module_file(mod: str) -> Path:
    p = ROOT / Path(*mod.split("."))
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def closure(path: Path) -> set[str]:
    seen, todo = set(), list(lmtune_imports(path))
    while todo:
        mod = todo.pop()
        if mod in seen or not module_file(mod).is_file():
            continue
        seen.add(mod)
        todo += lmtune_imports(module_file(mod))
    return seen


def declared(stage: dict, task: str | None = None) -> set[str]:
    """The files a stage's deps cover (a folder dep covers every file under it), `${task}` read as DVC
    interpolates it from params.yaml (or as `task`)."""
    task = task or yaml.safe_load((ROOT / "params.yaml").read_text())["task"]
    return {d.replace("${task}", task) for d in stage["deps"]}


def docstring_only(rel: str) -> bool:
    """A package's __init__.py that only documents the package: nothing in it can change a stage's output."""
    body = ast.parse((ROOT / rel).read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def covered(rel: str, deps: set[str]) -> bool:
    return ((rel.endswith("__init__.py") and docstring_only(rel)) or rel in deps
            or any(rel.startswith(d.rstrip("/") + "/") for d in deps))


def test_stages_in_data_flow_order():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert list(dvc["stages"]) == STAGES
    for name, stage in dvc["stages"].items():
        assert stage["cmd"] == f"python -m stages.{name}"


def test_every_stage_declares_the_code_it_imports():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        deps = declared(stage)
        assert f"stages/{name}.py" in deps
        for mod in closure(ROOT / "stages" / f"{name}.py"):
            rel = str(module_file(mod).relative_to(ROOT))
            assert covered(rel, deps), f"stage {name} imports {mod} but does not list {rel} in deps"


@pytest.mark.slow
def test_every_stage_declares_the_code_it_imported_while_running(tiny_repro):
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    imported = stage_imports(tiny_repro.repro_output)
    assert set(imported) == set(dvc["stages"]), sorted(imported)  # every stage ran and was traced
    for name, mods in imported.items():
        assert "lmtune.params" in mods, (name, sorted(mods))  # the trace works: every stage reads params
        for mod in mods:
            rel = str(module_file(mod).relative_to(ROOT))
            assert covered(rel, declared(dvc["stages"][name])), f"stage {name} imported {mod} but does not list {rel}"


def stage_imports(out: str) -> dict[str, set[str]]:
    """lmtune modules per stage from `dvc repro` output run with PYTHONPROFILEIMPORTTIME=1
    (lines `import time: self | cumulative | <indent>module`)."""
    found, stage = {}, None
    for line in out.splitlines():
        m = re.match(r"Running stage '(\w+)'", line)
        if m:
            stage = m.group(1)
            found[stage] = set()
        elif stage and line.startswith("import time:"):
            mod = line.rsplit("|", 1)[-1].strip()
            if mod.split(".")[0] == "lmtune" and module_file(mod).is_file():
                found[stage].add(mod)
    return found


TASK_MODULES = {f"lmtune/tasks/{t}.py" for t in TASKS}
PRESENTING = {"export"}  # the stages that render for people: the model card, its tables and samples


def test_code_deps_follow_the_data():
    """No stage lists a whole package, another task's module or (unless it presents) the report room."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        code = [d for d in stage["deps"] if d.startswith(("lmtune", "stages"))]
        # Folders of data the code loads by path (evaluate's metric modules, the harness's task YAMLs), not packages.
        assert all(d.endswith(".py") or d in ("lmtune/eval/metric_modules", "lmtune/eval/harness_tasks")
                   for d in code), (name, code)
        assert not set(code) & TASK_MODULES, f"{name} names a task module instead of lmtune/tasks/${{task}}.py"
        if any(d.startswith("lmtune/tasks/") for d in code):
            assert "lmtune/tasks/${task}.py" in code, name
        report = {d for d in code if d.startswith("lmtune/report/")}
        if name not in PRESENTING:  # evaluate's console line is the one formatter, not the card or samples
            assert report <= {"lmtune/report/metrics.py"}, (name, report)
