"""Headless Chromium with the network blocked: screenshots, the rendered DOM, console messages, pixel shares."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Set by .ci/run: there a missing browser is a failure, not a skip (CI must not go green without the browser tests).
REQUIRE = "LMTUNE_REQUIRE_BROWSER"


def require_chromium() -> str:
    if not Path(CHROMIUM).is_file():
        why = (f"no chromium at {CHROMIUM} (Debian: apt-get install -y chromium; .ci/run installs it when "
               "apt-get exists)")
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{why}, and {REQUIRE}=1 says the browser tests must run")
        pytest.skip(why)
    return CHROMIUM


def _run(page: Path, tmp: Path, *mode: str, size=(1280, 1600)) -> subprocess.CompletedProcess:
    cmd = [
        require_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # every host name fails: no network at all
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
        # vega renders after the load event (promises): give the page virtual time to finish.
        "--virtual-time-budget=10000", f"--window-size={size[0]},{size[1]}", *mode, page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def console(stderr: str) -> list[str]:
    """The page's console messages (Chromium logs each one as a CONSOLE line on stderr)."""
    return [line.split("] ", 1)[-1] for line in stderr.splitlines() if ":CONSOLE" in line]


WARNINGS = (
    '"WARN ',  # vega's logger, e.g. "Infinite extent" for a layer that starts empty (DVC's hover rule)
    '"The input spec uses Vega-Lite v',  # vega-embed: DVC's templates say v5, the bundle compiles them with v6
)


def page_errors(messages: list[str]) -> list[str]:
    """Every console message but the known vega warnings: exceptions, console.error, anything else.

    (Chromium's stderr log does not carry the console level, so the warnings are told apart by text.)
    """
    return [m for m in messages if not m.startswith(WARNINGS)]


def screenshot(page: Path, tmp: Path, size=(1280, 1600)) -> tuple[np.ndarray, list[str]]:
    """(RGB pixels [h, w, 3], console messages) of the page as Chromium draws it."""
    from PIL import Image

    out = tmp / f"{page.stem}-{size[0]}x{size[1]}.png"
    proc = _run(page, tmp, f"--screenshot={out}", size=size)
    assert out.is_file(), proc.stderr[-3000:]
    with Image.open(out) as im:
        return np.asarray(im.convert("RGB")), console(proc.stderr)


def dom(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """(the DOM after the scripts ran, console messages)."""
    proc = _run(page, tmp, "--dump-dom")
    return proc.stdout, console(proc.stderr)


def shares(pixels: np.ndarray) -> tuple[float, float]:
    """(share of non-white pixels, share of coloured pixels).

    Coloured = max - min channel > 60: chart marks (lines, bars, points) are; black or grey text and
    the light row shading are not, so a page with text but no drawn chart has ~0 coloured pixels.
    """
    p = pixels.astype(int)
    non_white = (p.min(axis=2) < 245).mean()
    coloured = ((p.max(axis=2) - p.min(axis=2)) > 60).mean()
    return float(non_white), float(coloured)
