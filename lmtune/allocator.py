"""Keep glibc's malloc from handing large tensors back to the kernel after every use.

Why: glibc serves an allocation above its mmap threshold with a fresh mmap and unmaps it on free;
the threshold adapts, but never above 32 MiB, and the heap top above the trim threshold is returned
too. A training or evaluation step allocates and frees the same large tensors every step, e.g.
SmolLM2's logits at batch 8 x 256: 8 * 256 * 49,152 vocab * 4 B = 403 MB, so each one came back as
~98,000 fresh 4 KiB pages the kernel zero-fills (page faults, counted as system time). Measured on the
2-core CPU here: a SmolLM2-135M train step 1.32-1.52 s -> 1.06 s, an 8 x 256 evaluation 3.92 -> 3.71 s,
minor page faults per evaluation ~200,000 -> 0 (bench/RESULTS.md has the current figures).
Results are bit-identical: only where memory comes from changes.

Cost: up to TRIM_THRESHOLD bytes of freed memory stay with the process instead of going back to the
OS, so the peak RSS can be a little higher (measured in bench/RESULTS.md). Off when the user set
glibc's own knobs (MALLOC_*_ / GLIBC_TUNABLES), on non-glibc platforms, or with LMTUNE_MALLOC_TUNING=0.
"""
import ctypes
import os
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# 1 GiB each: above any per-step tensor of the models this project trains on CPU (the 403 MB logits
# above; fixed thresholds also switch off glibc's adaptive one), below what would keep a finished
# stage's memory from the OS for long. mallopt takes a C int, so both must stay < 2**31.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 30

_USER_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def tune_cpu_allocator(environ=os.environ) -> bool:
    """Set fixed, large glibc malloc thresholds for this process. Returns True if they were set."""
    if environ.get("LMTUNE_MALLOC_TUNING", "1") == "0" or any(k in environ for k in _USER_KNOBS):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt is a no-op stub
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
