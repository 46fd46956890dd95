"""`make bench`'s command line and table (the bench itself is not run by `make test`)."""
import pytest

from bench import __main__ as cli
from bench.common import Row, table


def test_defaults_cover_every_row():
    args = cli.parse_args([])
    assert args.rows.split(",") == list(cli.ROWS)
    assert args.repeats >= 3
    assert args.json.name == "bench.json" and args.json.parent.name == "metrics"


def test_unknown_row_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown"):
        cli.main(["--rows", "chunk,nope", "--json", str(tmp_path / "b.json")])


def test_table_shows_both_figures_ratio_and_verdict():
    rows = [Row("a", 0.5, 10.0, "s", 20.0, "≥ 50×", False, note="why"), Row("b", 1.0, None, "s", None, "< 3 s", True)]
    out = table(rows)
    assert "| a | 0.5 s | 10 s | 20.00× | ≥ 50× | **no** |" in out
    assert "| b | 1 s | — | — | < 3 s | yes |" in out
    assert "- **a**: why" in out


def test_dvc_stage_lines_are_parsed():
    from bench.dvcrepro import _ran

    out = "Running stage 'train':\n> python -m stages.train\nStage 'chunk' didn't change, skipping\nRunning stage 'evaluate':"
    assert _ran(out) == ["train", "evaluate"]


def test_bench_imports_the_library_never_the_tests():
    """bench/ runs where the tests are not installed (a GPU machine without pytest): no import of tests/."""
    import ast

    from conftest import ROOT

    test_modules = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests"}
    found = []
    for f in sorted((ROOT / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{f.name}: {n}" for n in names if n.split(".")[0] in test_modules]
    assert found == []
