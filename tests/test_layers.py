"""The import graph of lmtune/ and stages/: imports only go down the layers, and no module imports itself
back through others (no cycle). Every import counts, those inside functions too: a lazy import is still a
dependency. Layers, top to bottom: stages > cli > report > train > tasks > eval > data, models > core."""
import ast
from pathlib import Path

import pytest

from conftest import ROOT

# The first matching prefix names a module's layer; anything else in lmtune/ is core (params, paths, io, ...).
LAYERS = [("stages", 7), ("lmtune.cli", 6), ("lmtune.report", 5), ("lmtune.train", 4), ("lmtune.tasks", 3),
          ("lmtune.eval", 2), ("lmtune.data", 1), ("lmtune.models", 1)]


def layer(mod: str) -> int:
    return next((rank for prefix, rank in LAYERS if mod == prefix or mod.startswith(prefix + ".")), 0)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(mod: str) -> bool:
    p = ROOT / Path(*mod.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The project modules a file imports anywhere in it; `from pkg import name` is the module pkg.name
    when there is one, else pkg."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("lmtune", "stages"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in ("lmtune", "stages")}
    return found


def graph() -> dict[str, set[str]]:
    files = [*(ROOT / "lmtune").rglob("*.py"), *(ROOT / "stages").glob("*.py")]
    return {module_name(f): imports(f) - {module_name(f)} for f in files if "metric_modules" not in f.parts}


def upward(g: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
                  for a, deps in g.items() for b in deps if layer(b) > layer(a))


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_goes_up_a_layer():
    assert upward(graph()) == []


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    # Control: the real graph with one injected import of each kind the checks exist for.
    g = graph()
    assert "lmtune.tasks.causal_lm" in g and "lmtune.params" in g  # the graph reads the real modules
    bad = {**g, "lmtune.params": g["lmtune.params"] | {"lmtune.tasks"}}  # the cycle the old registry had
    assert upward(bad) == ["lmtune.params (layer 0) imports lmtune.tasks (layer 3)"]
    assert any({"lmtune.params", "lmtune.tasks"} <= set(c) for c in cycles(bad))
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from lmtune.report import card\n    import lmtune.tasks.base\n")
    assert imports(lazy) == {"lmtune.report.card", "lmtune.tasks.base"}  # inside a function: still counted


@pytest.mark.parametrize("mod, rank", [("stages.train", 7), ("lmtune.cli.compare", 6), ("lmtune.report.card", 5),
                                       ("lmtune.train.trainer", 4), ("lmtune.tasks.base", 3), ("lmtune.eval.metrics", 2),
                                       ("lmtune.data.text", 1), ("lmtune.models.lora", 1), ("lmtune.params", 0)])
def test_layers_are_read_from_the_module_path(mod, rank):
    assert layer(mod) == rank


# Functions longer than this in lmtune/ and stages/ carry a `# long: <why>` comment on the lines above their def.
MAX_LINES = 50


def long_functions_without_reason(source: str) -> list[str]:
    """Names of the functions in `source` over MAX_LINES lines with no `# long:` comment right above them."""
    lines, out = source.splitlines(), []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1  # 0-based line of the def
            above = []
            for line in reversed(lines[:first]):
                if not line.lstrip().startswith("#"):
                    break
                above.append(line)
            if not any(line.lstrip().startswith("# long:") for line in above):
                out.append(node.name)
    return out


def test_long_functions_say_why():
    found = {f"{path.relative_to(ROOT)}:{name}" for top in ("lmtune", "stages") for path in (ROOT / top).rglob("*.py")
             for name in long_functions_without_reason(path.read_text(encoding="utf-8"))}
    assert not found, f"over {MAX_LINES} lines without a '# long: <why>' comment above the def: {sorted(found)}"


def test_the_length_check_sees_a_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    assert long_functions_without_reason(f"def f():\n{body}") == ["f"]
    assert long_functions_without_reason(f"# long: a reason\ndef f():\n{body}") == []
    assert long_functions_without_reason(f"def f():\n{body[:-12]}") == []  # exactly MAX_LINES lines
