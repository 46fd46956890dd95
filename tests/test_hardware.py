"""lmtune.train.hardware: bf16 autocast on CPUs with native bf16, torch.compile on long CUDA runs (pure choices),
and how training_arguments and the train timing use them."""
import pytest
import torch

from lmtune import device, params
from lmtune.train import hardware, trainer


@pytest.mark.parametrize("flags, native", [
    ({"avx512f", "avx512_bf16", "avx2"}, True),      # Zen 4 / Cooper Lake (this machine)
    ({"amx_bf16", "amx_tile"}, True),                 # Sapphire Rapids
    ({"AVX512_BF16"}, True),                          # spelled in capitals
    ({"avx512f", "avx512_vnni", "avx2"}, False),      # AVX-512 without bf16: oneDNN emulates it, slower than fp32
    ({"avx2", "fma"}, False),
    (set(), False),                                   # flags unknown (non-Linux without torch's probe)
])
def test_cpu_native_bf16(flags, native):
    assert hardware.cpu_native_bf16(flags) is native


def test_cpu_flags_from_proc_cpuinfo_when_torch_cannot_say(tmp_path, monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert hardware.cpu_flags(info) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert hardware.cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("precision, cuda, gpu_bf16, cpu_bf16, mps, expected", [
    ("auto", True, True, False, False, "bf16"),
    ("auto", True, False, True, False, "fp16"),     # the GPU decides, not the CPU
    ("auto", False, False, True, False, "bf16"),    # CPU with native bf16
    ("auto", False, False, False, False, "fp32"),   # other CPUs
    ("auto", False, False, True, True, "fp32"),     # MPS: float32
    ("fp32", False, False, True, False, "fp32"),    # fp32 forces fp32
    ("fp32", True, True, False, False, "fp32"),
    ("bf16", False, False, False, False, "bf16"),   # asked for: kept (emulated bf16 on such a CPU)
])
def test_train_precision(precision, cuda, gpu_bf16, cpu_bf16, mps, expected):
    assert hardware.train_precision(precision, cuda, gpu_bf16, cpu_bf16, mps) == expected


@pytest.mark.parametrize("setting, cuda, steps, expected", [
    (True, False, 10, True), (False, True, 10**6, False),                        # explicit: as given
    ("auto", True, hardware.COMPILE_MIN_STEPS, True),
    ("auto", True, hardware.COMPILE_MIN_STEPS - 1, False),                     # too short to repay compiling
    ("auto", True, None, False),
    ("auto", False, 10**6, False),                                               # never on CPU
])
def test_use_torch_compile(setting, cuda, steps, expected):
    assert hardware.use_torch_compile(setting, cuda, steps) is expected


def test_planned_steps_follow_the_trainers_arithmetic():
    tp = params.load().train.model_copy(update={"max_steps": -1, "epochs": 2, "batch_size": 4,
                                                "gradient_accumulation_steps": 3})
    assert trainer.planned_steps(tp, 100) == 2 * 9          # 25 batches, 9 windows of 3 (the last partial)
    assert trainer.planned_steps(tp, 100, world_size=2) == 2 * 5   # 13 batches per process
    assert trainer.planned_steps(tp.model_copy(update={"max_steps": 7}), 100) == 7


@pytest.fixture
def args_on_cpu(monkeypatch, tmp_path):
    """training_arguments' kwargs without CUDA, on a CPU with or without native bf16."""
    def run(cpu_bf16: bool, planned_steps=None, **train_overrides):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(trainer, "cpu_bf16_here", lambda cuda: cpu_bf16 and not cuda)
        monkeypatch.setattr(trainer.transformers, "TrainingArguments", lambda **kw: kw)
        tp = params.load().train.model_copy(update=train_overrides)
        return trainer.training_arguments(tp, 0, tmp_path, planned_steps)
    return run


def test_auto_trains_in_bf16_on_a_cpu_with_native_bf16_and_evaluates_in_fp32(args_on_cpu):
    kw = args_on_cpu(cpu_bf16=True, precision="auto")
    assert (kw["bf16"], kw["fp16"]) == (True, False)
    assert args_on_cpu(cpu_bf16=False, precision="auto")["bf16"] is False
    assert args_on_cpu(cpu_bf16=True, precision="fp32")["bf16"] is False
    # Evaluation (lmtune.device) keeps fp32 on CPU under auto: metrics stay exact and comparable.
    assert device.select("auto", cuda=False, bf16_supported=False, mps=False).dtype is None
    assert trainer.training_autocast_dtype("auto", "cpu") is (torch.bfloat16 if trainer.cpu_bf16_here(False) else None)


def test_torch_compile_auto_is_off_on_cpu_even_for_long_runs(args_on_cpu):
    assert args_on_cpu(cpu_bf16=False, planned_steps=10**6, torch_compile="auto")["torch_compile"] is False
    assert args_on_cpu(cpu_bf16=False, planned_steps=1, torch_compile=True)["torch_compile"] is True
