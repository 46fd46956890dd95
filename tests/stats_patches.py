"""Break lmtune/stats.py in five known ways and show that each breaks a calibration test.

    python tests/stats_patches.py          # one line per patch: the tests that failed (exit 1 if none did)

Each patch is applied to a copy of lmtune/ in a temporary folder, and tests/test_calibration.py and
tests/test_stats.py run against that copy (in a fresh process, ~10 s each). The patches are the ones an
independent check applied before these tests existed, when every test stayed green.
"""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["test_calibration.py", "test_stats.py"]

# name -> [(pattern, replacement)]; every pattern must match at least once.
PATCHES = {
    "80% level": [(r"^LEVEL = 0\.95", "LEVEL = 0.80")],
    "99% level": [(r"^LEVEL = 0\.95", "LEVEL = 0.99")],
    "2n units": [(r"size=\(n, self\.n_draw\)", "size=(n, 2 * self.n_draw)")],
    "n/2 units": [(r"size=\(n, self\.n_draw\)", "size=(n, max(1, self.n_draw // 2))")],
    "mean of per-unit ratios": [(r"n\.sum\(\) / d\.sum\(\)", "(n / d).mean()"),
                                (r"\(w @ n\) / \(w @ d\)", "(w @ (n / d)) / w.sum(1)")],
}


def patched(source: str, edits) -> str:
    for pattern, repl in edits:
        source, count = re.subn(pattern, repl, source, flags=re.M)
        if not count:
            raise SystemExit(f"patch pattern {pattern!r} no longer matches lmtune/stats.py")
    return source


def failures(name: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "lmtune", tmp / "lmtune", ignore=shutil.ignore_patterns("__pycache__"))
        stats = tmp / "lmtune" / "stats.py"
        stats.write_text(patched(stats.read_text(), PATCHES[name]))
        (tmp / "tests").mkdir()
        for t in TESTS:
            shutil.copy(ROOT / "tests" / t, tmp / "tests" / t)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                               "-o", "addopts=", "--rootdir", str(tmp), *(f"tests/{t}" for t in TESTS)],
                              cwd=tmp, capture_output=True, text=True)
        return sorted(set(re.findall(r"^FAILED (\S+)", proc.stdout, re.M)))


def main() -> int:
    missed = []
    for name in PATCHES:
        failed = failures(name)
        print(f"{name}: {len(failed)} failed: {', '.join(f.split('::')[-1] for f in failed) or 'NONE'}", flush=True)
        if not failed:
            missed.append(name)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
