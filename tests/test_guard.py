"""The fixture guard guards itself (issue 25, item 9): a test that changes the shared `tiny_repro` (params, an
output, `.dvc/config`, `reports/`, a git ref) fails at teardown, naming what changed; a test that only reads passes.

An inner pytest session (a subprocess) loads tests/conftest.py as it is, with `tiny_repro` replaced by a cheap
copy of the project (no `dvc repro`: the guard hashes whatever is there), and runs one test per kind of change.
"""
import os
import re
import subprocess
import sys
import textwrap

from conftest import ROOT

INNER_CONFTEST = textwrap.dedent(f"""
    import importlib.util
    import sys

    # The project's own conftest, under another module name (this file is `conftest` in the inner session).
    spec = importlib.util.spec_from_file_location("project_conftest", {str(ROOT / "tests" / "conftest.py")!r})
    project = importlib.util.module_from_spec(spec)
    sys.modules["project_conftest"] = project
    spec.loader.exec_module(project)
    globals().update({{k: v for k, v in vars(project).items() if not k.startswith("__")}})
""")

INNER_TESTS = textwrap.dedent("""
    import pytest

    import project_conftest


    @pytest.fixture(scope="session")
    def tiny_repro(tmp_path_factory):
        repo = project_conftest.make_repo(tmp_path_factory.mktemp("guarded") / "repo")
        (repo.path / "models").mkdir(exist_ok=True)
        (repo.path / "models" / "weights.bin").write_bytes(b"0" * 16)
        return repo


    def test_reads_only(tiny_repro):
        assert tiny_repro.params["seed"] is not None

    def test_changes_params(tiny_repro):
        tiny_repro.set_params({"seed": tiny_repro.params["seed"] + 1})

    def test_changes_an_output(tiny_repro):
        (tiny_repro.path / "models" / "weights.bin").write_bytes(b"1" * 16)

    def test_changes_dvc_config(tiny_repro):
        tiny_repro.dvc("remote", "add", "-d", "leaked", "/tmp/nowhere")

    def test_writes_reports(tiny_repro):
        (tiny_repro.path / "reports").mkdir(exist_ok=True)
        (tiny_repro.path / "reports" / "compare.html").write_text("<html></html>", encoding="utf-8")

    def test_adds_a_git_ref(tiny_repro):
        tiny_repro.run("git", "update-ref", "refs/exps/leaked", "HEAD")
""")

# Each changing test, and the key the guard must name for it.
NAMED = {"test_changes_params": "params.yaml", "test_changes_an_output": "models/weights.bin",
         "test_changes_dvc_config": ".dvc/config", "test_writes_reports": "reports/compare.html",
         "test_adds_a_git_ref": "git refs"}


def test_guard_fails_every_test_that_changes_the_shared_repo(tmp_path):
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST, encoding="utf-8")
    (tmp_path / "test_inner.py").write_text(INNER_TESTS, encoding="utf-8")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-rA",
                           "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    # Every test body passed; the guard turned each change into an error at its teardown.
    assert re.search(r"\b6 passed, 5 errors\b", out), out[-3000:]
    # The report of each teardown error, by test name.
    parts = re.split(r"_+ ERROR at teardown of (\w+) _+", out)
    errors = dict(zip(parts[1::2], parts[2::2]))
    assert sorted(errors) == sorted(NAMED), out[-3000:]
    for test, key in NAMED.items():
        said = re.search(r"E\s+AssertionError: the test changed the shared tiny_repro .*?: (\[.*?\])", errors[test])
        assert said and repr(key) in said.group(1), (test, key, errors[test][-1500:])
