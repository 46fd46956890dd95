"""dvc.yaml's rules: each stage runs `python -m stages.<name>` and declares every lmtune module it imports."""
import ast
from pathlib import Path

import yaml

from conftest import ROOT

STAGES = ["download", "flatten", "tokenize", "chunk", "train", "evaluate", "base_samples", "export"]


def lmtune_imports(path: Path) -> set[str]:
    """lmtune modules imported anywhere in a file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lmtune":
            if node.module == "lmtune":
                found |= {f"lmtune.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lmtune"}
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


def test_stages_in_data_flow_order():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert list(dvc["stages"]) == STAGES
    for name, stage in dvc["stages"].items():
        assert stage["cmd"] == f"python -m stages.{name}"


def test_every_stage_declares_the_code_it_imports():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        deps = set(stage["deps"])
        assert f"stages/{name}.py" in deps
        for mod in closure(ROOT / "stages" / f"{name}.py"):
            rel = str(module_file(mod).relative_to(ROOT))
            if rel == "lmtune/__init__.py":
                continue
            assert rel in deps, f"stage {name} imports {mod} but does not list {rel} in deps"
