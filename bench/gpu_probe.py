"""`python -m bench.gpu_probe stages.NAME`: run `python -m stages.NAME` and record where its layers ran.

Used by bench/gpu_check.py to tell, without trusting any log line, on which device and under which
autocast dtype a stage's forward passes really ran: a global forward pre-hook sees every layer call
(modules that own parameters: Linear/Conv1D, Embedding, LayerNorm) and counts
(weights' device, weights' dtype, autocast dtype or None) at that moment. The counts, the wall time
and the CUDA peak memory go as JSON to the file named by LMTUNE_GPU_PROBE when the process exits
(also when the stage exits non-zero).
"""
import atexit
import collections
import json
import os
import runpy
import sys
import time

import torch

_seen: collections.Counter = collections.Counter()
_start = time.perf_counter()


def _hook(module, args):
    p = next(module.parameters(recurse=False), None)
    if p is None:  # containers (the model, a block): their layers are counted instead
        return
    kind = p.device.type
    cast = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    _seen[(kind, str(p.dtype).removeprefix("torch."), str(cast).removeprefix("torch.") if cast else None)] += 1


def _write(path: str) -> None:
    out = {
        "forwards": [[d, w, a, n] for (d, w, a), n in sorted(_seen.items(), key=str)],
        "seconds": round(time.perf_counter() - _start, 2),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_initialized() else 0.0,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f)


def main() -> None:
    module, rest = sys.argv[1], sys.argv[2:]
    atexit.register(_write, os.environ["LMTUNE_GPU_PROBE"])
    torch.nn.modules.module.register_module_forward_pre_hook(_hook)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
