"""lmtune/train/sharding.py: the preflight's per-process estimate under FSDP / DeepSpeed ZeRO (pure arithmetic).

tests/test_fsdp.py runs FSDP2 with 2 processes and bench/memory.py's fsdp row compares this estimate with
the measured peaks of both processes.
"""
import functools

import transformers
import yaml

from conftest import ROOT
from lmtune.params import validate
from lmtune.train import estimate, limits, plan, sharding

MB = 2**20
E = estimate.Estimate(batch=4, block=64, base=1000 * MB, gradients=200 * MB, optimizer=400 * MB,
                      activations=50 * MB, logits=30 * MB)


def test_layout_from_the_launchers_environment():
    fsdp = {"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    assert sharding.sharding(fsdp) == sharding.Sharding(4, True)
    assert sharding.sharding({**fsdp, "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}) == sharding.Sharding(4, False)
    ds = {"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true"}
    assert sharding.sharding({**ds, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}) == sharding.Sharding(8, True)
    assert sharding.sharding({**ds, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}) == sharding.Sharding(8, False)
    assert sharding.sharding({**ds, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}) == sharding.NONE
    assert sharding.sharding({"WORLD_SIZE": "4"}) == sharding.NONE  # DDP: every process holds everything
    assert sharding.sharding({**fsdp, "WORLD_SIZE": "1"}) == sharding.NONE


def test_gradients_and_adamw_state_divide_by_the_shards_and_parameters_too_on_cuda():
    full = sharding.Sharding(4, True)
    cuda = sharding.per_process(E, full, weights=400 * MB, gathered=20 * MB, cuda=True)
    assert (cuda.gradients, cuda.optimizer) == (50 * MB, 100 * MB)
    assert cuda.base == 1000 * MB - 400 * MB + 100 * MB + 20 * MB  # weight shard + the gathered units
    assert (cuda.activations, cuda.logits) == (E.activations, E.logits)  # per process micro-batch: unchanged
    # CPU: the resident base already holds the loaded whole model; only the gathered units come on top.
    assert sharding.per_process(E, full, 400 * MB, 20 * MB, cuda=False).base == 1000 * MB + 20 * MB
    zero2 = sharding.per_process(E, sharding.Sharding(4, False), 400 * MB, 20 * MB, cuda=True)
    assert (zero2.base, zero2.gradients, zero2.optimizer) == (E.base, 50 * MB, 100 * MB)
    assert sharding.per_process(E, sharding.NONE, 400 * MB, 20 * MB, cuda=True) == E


def test_gathered_units_are_the_root_and_the_largest_layer():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=1000, n_positions=64, n_embd=32,
                                                                 n_layer=2, n_head=2))
    layer = sum(p.numel() * 4 for p in model.transformer.h[0].parameters())
    root = estimate.weight_bytes(model) - 2 * layer  # wte (tied lm_head), wpe, ln_f
    assert sharding.gathered_bytes(model) == 2 * (root + layer)


def test_sharding_lets_a_batch_fit_that_one_process_could_not_hold():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(batch_size=4, gradient_accumulation_steps=1)
    tp = validate(raw).train
    prof = estimate.Profile(block=64, fixed=0, per_sample=10 * MB, fixed_checkpointed=0, per_sample_checkpointed=MB,
                            logits_per_sample=MB)
    whole = estimate.estimate(prof, 4, 1000 * MB, 1000 * MB, False).total
    limit = limits.Limit(whole - 1, "test")
    share = functools.partial(sharding.per_process, sh=sharding.Sharding(4, True), weights=1000 * MB,
                              gathered=10 * MB, cuda=True)
    chosen = plan.decide(tp, prof, 1000 * MB, 1000 * MB, limit, share=share)
    assert chosen.batch_size == 4 and chosen.estimate_mb < whole / MB / 2
    try:
        plan.decide(tp, prof, 1000 * MB, 1000 * MB, limit)
    except Exception as e:
        assert "not enough memory" in str(e)
    else:
        raise AssertionError("the unsharded estimate should not fit")
