"""lmtune.allocator: a large buffer allocated again after a free must reuse memory, not fault it in."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune import allocator

# 256 MiB: well above glibc's 32 MiB maximum adaptive mmap threshold, like SmolLM2's logits.
PROBE = r"""
import json, resource, sys
import numpy as np
from lmtune.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(256 * 2**20 // 8)  # touches every page
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del a
print(json.dumps({"tuned": tuned, "faults": faults}))
"""
ROOT = Path(__file__).resolve().parent.parent


def probe(**env) -> dict:
    import os

    clean = {k: v for k, v in os.environ.items() if k not in allocator._USER_KNOBS and k != "LMTUNE_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc (Linux) only")


def test_tuned_process_reuses_large_buffers():
    r = probe()
    assert r["tuned"] is True
    # Counted in faults, not pages: with transparent huge pages one fault can map 2 MiB.
    first, again = r["faults"][0], max(r["faults"][1:])
    assert first > 100  # the first use faults the buffer in
    assert again < 0.05 * first, r  # then the freed memory is reused


def test_untuned_process_faults_every_time():
    """What the tuning fixes (and that the opt-out switch really switches it off)."""
    r = probe(LMTUNE_MALLOC_TUNING="0")
    assert r["tuned"] is False
    assert r["faults"][0] > 100
    assert min(r["faults"][1:]) > 0.5 * r["faults"][0], r


def test_user_malloc_settings_win():
    assert allocator.tune_cpu_allocator({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False
    assert allocator.tune_cpu_allocator({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) is False
