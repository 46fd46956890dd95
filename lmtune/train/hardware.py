"""What this machine makes fast, decided once per run: bf16 autocast on CPUs that do bf16 natively, and
torch.compile on CUDA for runs long enough to repay the compilation.

Pure decisions (tested on any machine) with one probe each of the hardware beside them.
"""
from pathlib import Path

# CPU features that execute bf16 dot products in hardware: AVX512_BF16 (Intel Cooper Lake / Sapphire Rapids,
# AMD Zen 4 and later) and AMX (Intel Sapphire Rapids and later). Without them oneDNN emulates bf16 with fp32
# instructions plus conversions, slower than plain fp32. Measured on this 2-core AVX512_BF16 machine with the
# pinned torch: a 1024^3 matmul runs at 132.6 GFLOP/s in bf16 against 62.5 in fp32 (2.1x).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# torch.compile on CUDA: bench/GPU_RESULTS.md (H200, GPT-2 124M, 8 x 1,024 tokens) measured 69.3 ms per step
# without and 30.3 ms with it, 39 ms saved per step. Compiling that model's training step takes on the order of
# a minute (an assumption, not measured in this project); 60 s / 39 ms = ~1,540 steps to break even, so auto
# compiles runs of 2,000 optimizer steps and more. Smaller models save less per step but also compile faster.
COMPILE_MIN_STEPS = 2000


def cpu_native_bf16(flags) -> bool:
    """Whether a CPU with these feature flags (lower-case names, as /proc/cpuinfo spells them) has bf16 in hardware."""
    return bool(NATIVE_BF16_FLAGS & {f.lower() for f in flags})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """This CPU's feature flags: torch's own probe (every OS), else Linux's /proc/cpuinfo, else none."""
    import torch

    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        try:
            return {name for name, on in caps().items() if on is True}
        except (RuntimeError, AttributeError):
            pass
    try:
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def train_precision(precision: str, cuda: bool, gpu_bf16: bool, cpu_bf16: bool, mps: bool = False) -> str:
    """`train.precision` resolved for training: "bf16", "fp16" or "fp32".

    auto: bf16 on GPUs that support it, fp16 on other GPUs, bf16 autocast on CPUs with native bf16
    (cpu_native_bf16), fp32 elsewhere (other CPUs, MPS). An explicit value is kept as it is.
    """
    if precision != "auto":
        return precision
    if cuda:
        return "bf16" if gpu_bf16 else "fp16"
    return "bf16" if cpu_bf16 and not mps else "fp32"


def use_torch_compile(setting, cuda: bool, planned_steps: int | None, min_steps: int = COMPILE_MIN_STEPS) -> bool:
    """`train.torch_compile` resolved: true/false as given; auto compiles on CUDA when the run has at least
    `min_steps` optimizer steps (planned_steps None: unknown, not compiled). Off on CPU and MPS: no gain
    that repays the compile time has been measured there."""
    if setting != "auto":
        return bool(setting)
    return cuda and planned_steps is not None and planned_steps >= min_steps
