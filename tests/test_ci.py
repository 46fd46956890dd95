"""CI cannot go green without the browser tests (issue 25, item 7): .ci/run installs Chromium or fails, and
sets LMTUNE_REQUIRE_BROWSER=1, which turns the browser tests' skip into a failure; `make test` shows skip reasons."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import browser
from conftest import ROOT


def test_missing_browser_skips_with_its_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv(browser.REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium at"):
        browser.require_chromium()


def test_missing_browser_fails_when_ci_requires_it(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv(browser.REQUIRE, "1")
    # BaseException: a skip (pytest's Skipped) must be caught here and fail this test, not skip it.
    with pytest.raises(BaseException) as raised:
        browser.require_chromium()
    assert raised.type is pytest.fail.Exception and "LMTUNE_REQUIRE_BROWSER=1" in str(raised.value), raised


def test_present_browser_is_returned(monkeypatch, tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("", encoding="utf-8")
    monkeypatch.setattr(browser, "CHROMIUM", str(fake))
    monkeypatch.setenv(browser.REQUIRE, "1")
    assert browser.require_chromium() == str(fake)


def _ci_run(tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess:
    """.ci/run with a PATH holding only `dirname` and the given fake tools (name -> shell body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    return subprocess.run(["/bin/bash", str(ROOT / ".ci" / "run")], env={"PATH": str(bin_dir)}, text=True,
                          capture_output=True, timeout=60)


def test_ci_fails_when_chromium_cannot_be_installed(tmp_path):
    # apt-get exists but fails; `make` would record that it ran: it must not.
    proc = _ci_run(tmp_path, {"apt-get": "exit 100", "make": f"touch {tmp_path}/make-ran"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "could not install chromium" in proc.stderr
    assert not (tmp_path / "make-ran").exists()


def test_ci_fails_without_chromium_or_apt_get(tmp_path):
    proc = _ci_run(tmp_path, {"make": f"touch {tmp_path}/make-ran"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no chromium on PATH" in proc.stderr
    assert not (tmp_path / "make-ran").exists()


def test_ci_runs_make_test_with_the_browser_required(tmp_path):
    proc = _ci_run(tmp_path, {"chromium": "exit 0", "make": f'echo "$@ $LMTUNE_REQUIRE_BROWSER" > {tmp_path}/make-ran'})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "make-ran").read_text(encoding="utf-8").split() == ["test", "1"]


@pytest.mark.parametrize("target", ["test", "test-fast"])
def test_make_test_reports_skip_reasons(target):
    cmd = subprocess.run(["make", "-n", "-o", "install", target], cwd=ROOT, text=True, capture_output=True,
                         check=True).stdout
    pytest_line = next(line for line in cmd.splitlines() if "-m pytest" in line)
    assert "-rs" in pytest_line.split(), pytest_line
