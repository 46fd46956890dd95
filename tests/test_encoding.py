"""Text files are read and written as UTF-8 whatever the locale (issue 25, item 5).

Python opens a text file in the locale's encoding unless told otherwise; under `LC_ALL=C` with UTF-8 mode
off (`PYTHONUTF8=0`) that is ASCII, so a params.yaml prompt such as "Café" fails to load and a sample with
an accent fails to write. Every text open in the library, the stages and the bench names its encoding.
"""
import ast
import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from conftest import ROOT

SOURCES = ("lmtune", "stages", "bench")
TEXT_CALLS = ("open", "read_text", "write_text")
NON_ASCII = "Café — naïve “quotes” 東京"


def _mode(call: ast.Call) -> str | None:
    """The mode an open() call asks for ("r" when not given; None when it is not a literal)."""
    pos = call.args[1:2] if isinstance(call.func, ast.Name) else call.args[0:1]  # open(path, mode) / path.open(mode)
    given = [a for a in pos] + [k.value for k in call.keywords if k.arg == "mode"]
    if not given:
        return "r"
    return given[0].value if isinstance(given[0], ast.Constant) else None


# mutmut (tests/mutation.py) runs the tests on a copy of the library in which each function also has its mutated
# variants (`x_NAME__mutmut_3`), some with the encoding argument dropped; only the original code is in force.
MUTANT = re.compile(r"__mutmut_\d+$")


def _nodes(tree: ast.AST):
    """ast.walk (breadth first) without the bodies of mutmut's mutated variants."""
    todo = deque([tree])
    while todo:
        node = todo.popleft()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and MUTANT.search(node.name):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def text_opens_without_encoding(path: Path) -> list[str]:
    """`file:line` of every open()/read_text()/write_text() in `path` in text mode with no encoding argument."""
    found = []
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name not in TEXT_CALLS or any(k.arg == "encoding" for k in node.keywords):
            continue
        if name == "open":
            owner = node.func.value if isinstance(node.func, ast.Attribute) else None
            if isinstance(owner, ast.Name) and owner.id in ("os", "pa", "gzip", "tarfile", "zipfile", "io"):
                continue  # not the builtin open (binary, or an fd / archive API)
            mode = _mode(node)
            if mode is not None and "b" in mode:
                continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_text_open_names_its_encoding():
    found = [hit for top in SOURCES for f in sorted((ROOT / top).rglob("*.py")) for hit in text_opens_without_encoding(f)]
    assert found == [], f"text opened in the locale's encoding (add encoding=\"utf-8\"): {found}"


def test_the_scan_sees_a_text_open_without_encoding(tmp_path):
    """The check above would see the bug: each form once without, once with its encoding (or binary)."""
    f = ROOT / "tests" / f".scan-probe-{os.getpid()}.py"
    try:
        f.write_text("from pathlib import Path\np = Path('x')\n"
                     "p.read_text()\np.write_text('a')\nopen(p)\nopen(p, 'w')\np.open()\n"
                     "p.read_text(encoding='utf-8')\nopen(p, 'rb')\np.open('wb')\nopen(p, encoding='utf-8')\n"
                     "def x_f__mutmut_1():\n    open(p)\n",
                     encoding="utf-8")
        assert [hit.rsplit(":", 1)[1] for hit in text_opens_without_encoding(f)] == ["3", "4", "5", "6", "7"]
    finally:
        f.unlink(missing_ok=True)


# The locale that reads files as ASCII: the C locale with Python's UTF-8 mode explicitly off (PEP 540 turns it
# on by itself for the C locale otherwise).
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}


def _in_ascii_locale(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")} | ASCII_LOCALE
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, text=True, encoding="utf-8",
                          capture_output=True, timeout=120)


def test_the_subprocess_really_runs_in_an_ascii_locale():
    proc = _in_ascii_locale("import locale, sys; print(locale.getpreferredencoding(False), sys.flags.utf8_mode)")
    assert proc.stdout.split() == ["ANSI_X3.4-1968", "0"], proc.stdout + proc.stderr


@pytest.mark.parametrize("where", ["generate.prompts", "data.train_file"])
def test_params_with_non_ascii_text_load_under_the_c_locale(tmp_path, where):
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    if where == "generate.prompts":
        raw["generate"]["prompts"] = [NON_ASCII]
    else:
        raw["data"] = {**raw["data"], "source": "files", "train_file": f"{NON_ASCII}.txt", "validation_file": "v.txt"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert NON_ASCII.encode("utf-8") in path.read_bytes()  # the file really holds the raw UTF-8 bytes
    # In this process too (whatever its locale); it also tells mutmut that this test covers params.load, whose
    # mutants the subprocess below then runs (it inherits MUTANT_UNDER_TEST and imports the same tree).
    from lmtune import params

    loaded = params.load(path)
    assert (loaded.generate.prompts if where == "generate.prompts" else loaded.data.train_file) is not None
    proc = _in_ascii_locale(
        "import sys; from pathlib import Path; from lmtune import params\n"
        "p = params.load(Path(sys.argv[1]))\n"
        "print(ascii(p.generate.prompts if sys.argv[2] == 'generate.prompts' else p.data.train_file))",
        str(path), where)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = [NON_ASCII] if where == "generate.prompts" else f"{NON_ASCII}.txt"
    assert proc.stdout.strip() == ascii(expected)
