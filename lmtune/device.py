"""Where a model runs outside the Trainer (evaluate, export's samples, `lmtune.cli.generate`), and in what precision.

One choice for every stage: CUDA, then MPS, then CPU. On CUDA the forward pass runs under the same
autocast dtype that `train.precision` gives training (bf16 where the GPU has it, else fp16); loss sums
stay in float32/float64 (lmtune.eval.metrics). The Trainer places the model itself in the train stage.
"""
import contextlib
from dataclasses import dataclass

import torch

from lmtune.errors import UserError


@dataclass(frozen=True)
class Placement:
    device: str                 # "cuda" | "mps" | "cpu"
    dtype: torch.dtype | None   # autocast dtype for forward passes; None = full float32

    def autocast(self):
        """A context for forward passes: autocast in `dtype` (CUDA; CPU with an explicit bf16), else nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.dtype)


def select(precision: str, cuda: bool, bf16_supported: bool, mps: bool) -> Placement:
    """The pure choice (tested without a GPU).

    precision is `train.precision`: auto = bf16 on GPUs with bf16, fp16 on other CUDA GPUs, fp32 elsewhere.
    An explicit bf16 on CPU autocasts to bf16, as training does then (lmtune.train.trainer.precision_flags
    asks the Trainer for CPU bf16 autocast), so evaluation runs in the precision the model was trained in.
    MPS runs float32 (its autocast support varies by torch version; correctness first).
    """
    if cuda:
        if precision == "auto":
            precision = "bf16" if bf16_supported else "fp16"
        if precision == "bf16" and not bf16_supported:
            raise UserError("train.precision: bf16 is not supported by this GPU (use auto or fp16)")
        return Placement("cuda", {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision))
    if precision == "fp16":
        raise UserError("train.precision: fp16 needs a CUDA GPU (use auto or fp32 without one)")
    if mps:
        return Placement("mps", None)
    return Placement("cpu", torch.bfloat16 if precision == "bf16" else None)


def current(precision: str = "auto") -> Placement:
    """The placement on this machine."""
    cuda = torch.cuda.is_available()
    return select(precision, cuda, cuda and torch.cuda.is_bf16_supported(),
                  bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available())
