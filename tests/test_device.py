"""lmtune.device: which device and autocast dtype evaluate, export and generate use (no GPU needed:
`select` is the pure choice, and `current` is checked with torch's CUDA/MPS queries patched)."""
import itertools

import pytest
import torch

from lmtune import device
from lmtune.train import trainer
from lmtune.device import Placement
from lmtune.errors import UserError

BF16, FP16 = torch.bfloat16, torch.float16


@pytest.mark.parametrize(
    "precision, cuda, bf16_ok, mps, expected",
    [
        # CUDA with bf16 (Ampere and later): auto is bf16, as training's precision_flags picks.
        ("auto", True, True, False, Placement("cuda", BF16)),
        ("bf16", True, True, False, Placement("cuda", BF16)),
        ("fp16", True, True, False, Placement("cuda", FP16)),
        ("fp32", True, True, False, Placement("cuda", None)),
        # CUDA without bf16 (V100, T4): auto falls back to fp16.
        ("auto", True, False, False, Placement("cuda", FP16)),
        ("fp16", True, False, False, Placement("cuda", FP16)),
        ("fp32", True, False, False, Placement("cuda", None)),
        # CUDA wins over MPS when both are reported.
        ("auto", True, True, True, Placement("cuda", BF16)),
        # MPS: float32 whatever precision asks for, except fp16 (an error below).
        ("auto", False, False, True, Placement("mps", None)),
        ("fp32", False, False, True, Placement("mps", None)),
        ("bf16", False, False, True, Placement("mps", None)),
        # CPU: float32, unless bf16 is asked for explicitly (training autocasts to bf16 then too).
        ("auto", False, False, False, Placement("cpu", None)),
        ("fp32", False, False, False, Placement("cpu", None)),
        ("bf16", False, False, False, Placement("cpu", BF16)),
    ],
)
def test_select(precision, cuda, bf16_ok, mps, expected):
    assert device.select(precision, cuda=cuda, bf16_supported=bf16_ok, mps=mps) == expected


def test_bf16_on_a_gpu_without_it_is_one_clear_error():
    with pytest.raises(UserError, match=r"^train\.precision: bf16 is not supported by this GPU"):
        device.select("bf16", cuda=True, bf16_supported=False, mps=False)


@pytest.mark.parametrize("mps", [False, True])
def test_fp16_without_cuda_is_one_clear_error(mps):
    with pytest.raises(UserError, match=r"^train\.precision: fp16 needs a CUDA GPU"):
        device.select("fp16", cuda=False, bf16_supported=False, mps=mps)


@pytest.mark.parametrize(
    "precision, cuda, bf16_ok", list(itertools.product(["auto", "fp32", "bf16", "fp16"], [True, False], [True, False]))
)
def test_forward_precision_matches_what_training_uses(precision, cuda, bf16_ok):
    """Evaluation runs in the precision the Trainer trained in (CUDA and CPU; MPS is float32 by design)."""
    bf16_ok = bf16_ok and cuda  # current() only asks torch about bf16 when CUDA is there
    try:
        flags = trainer.precision_flags(precision, cuda, bf16_ok)
    except UserError:
        with pytest.raises(UserError):
            device.select(precision, cuda=cuda, bf16_supported=bf16_ok, mps=False)
        return
    if precision == "bf16" and cuda and not bf16_ok:
        # The Trainer itself refuses bf16 on such a GPU; device.select says so in the params' words.
        with pytest.raises(UserError, match="bf16"):
            device.select(precision, cuda=cuda, bf16_supported=bf16_ok, mps=False)
        return
    placement = device.select(precision, cuda=cuda, bf16_supported=bf16_ok, mps=False)
    expected = BF16 if flags["bf16"] else FP16 if flags["fp16"] else None
    assert placement.dtype == expected
    assert placement.device == ("cuda" if cuda else "cpu")


def test_autocast_off_runs_float32():
    a = torch.randn(4, 4)
    with Placement("cpu", None).autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype == torch.float32


def test_cpu_bf16_autocast_runs_matmuls_in_bf16_and_ends_with_the_block():
    a = torch.randn(4, 4)
    with Placement("cpu", BF16).autocast():
        assert torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype == BF16
    assert not torch.is_autocast_enabled("cpu")
    assert (a @ a).dtype == torch.float32


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # this machine has none; nothing is entered
@pytest.mark.parametrize("dtype", [BF16, FP16])
def test_cuda_autocast_is_asked_for_the_placements_dtype(dtype):
    # Built, not entered: entering needs a GPU. torch.autocast keeps what it was asked for.
    ctx = Placement("cuda", dtype).autocast()
    assert isinstance(ctx, torch.autocast)
    assert (ctx.device, ctx.fast_dtype) == ("cuda", dtype)


@pytest.fixture
def machine(monkeypatch):
    """Pretend torch sees the given accelerators."""

    def set_(cuda: bool, bf16_ok: bool = False, mps: bool = False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)

        def bf16_supported(*a, **k):
            assert cuda, "is_bf16_supported must only be asked when CUDA is there (it initialises CUDA)"
            return bf16_ok

        monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    "cuda, bf16_ok, mps, precision, expected",
    [
        (True, True, False, "auto", Placement("cuda", BF16)),
        (True, False, False, "auto", Placement("cuda", FP16)),
        (True, True, False, "fp32", Placement("cuda", None)),
        (False, False, True, "auto", Placement("mps", None)),
        (False, False, False, "auto", Placement("cpu", None)),
    ],
)
def test_current_reads_the_machine(machine, cuda, bf16_ok, mps, precision, expected):
    machine(cuda, bf16_ok, mps)
    assert device.current(precision) == expected


def test_current_defaults_to_auto(machine):
    machine(cuda=True, bf16_ok=True)
    assert device.current() == Placement("cuda", BF16)


def test_current_on_this_machine_is_a_device_torch_can_use():
    p = device.current("auto")
    assert p.device in {"cuda", "mps", "cpu"}
    torch.zeros(1, device=p.device)  # a real placement, not only a name
    if not torch.cuda.is_available():
        assert p.dtype is None  # auto without CUDA: float32, the committed CPU metrics' precision
