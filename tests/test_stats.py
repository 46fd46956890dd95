"""The statistics behind compare's intervals and verdicts (lmtune/stats.py)."""
import math

import numpy as np
import pytest

from lmtune import stats


def blocks(seed=0, n=32, tokens=63):
    """Per-block summed NLL of a plausible LM: ~3.3 nats/token with block-to-block difficulty."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(3.3, 0.4, n)
    return difficulty * tokens, np.full(n, tokens, float)


def ppl(nll, tok):
    return stats.Ratio(nll, tok, "exp")


def test_point_estimate_is_token_weighted_perplexity():
    nll, tok = np.array([10.0, 30.0]), np.array([5.0, 15.0])
    assert ppl(nll, tok).value() == pytest.approx(math.exp(40 / 20))


def test_interval_contains_the_point_estimate_and_narrows_with_more_blocks():
    small = ppl(*blocks(1, n=16))
    large = ppl(*blocks(1, n=1024))
    for r in (small, large):
        point, lo, hi = stats.interval(r)
        assert lo < point < hi
    width = lambda r: stats.interval(r)[2] - stats.interval(r)[1]  # noqa: E731
    assert width(large) < width(small) / 3  # ~ sqrt(1024/16) = 8x narrower in expectation


def test_identical_per_block_losses_are_within_noise():
    nll, tok = blocks(2)
    c = stats.compare(ppl(nll, tok), ppl(nll.copy(), tok), higher_is_better=False, paired=True)
    assert c.verdict == "within noise" and c.diff == 0 and c.low == c.high == 0


def test_every_block_lower_is_better_and_the_reverse_worse():
    nll, tok = blocks(3)
    # 1% less NLL on every block: tiny against the spread between blocks (~12%), but pairing cancels that.
    better, base = ppl(nll * 0.99, tok), ppl(nll, tok)
    c = stats.compare(better, base, higher_is_better=False, paired=True)
    assert c.verdict == "better" and c.high < 0 and c.paired
    assert stats.compare(base, better, higher_is_better=False, paired=True).verdict == "worse"


def test_pairing_is_what_separates_a_small_consistent_gain():
    nll, tok = blocks(3)
    better, base = ppl(nll * 0.99, tok), ppl(nll, tok)
    # The same 1% gain without pairing drowns in the block-to-block spread.
    assert stats.compare(better, base, higher_is_better=False, paired=False).verdict == "within noise"


def test_higher_is_better_metric():
    correct_a = np.array([1, 1, 1, 1, 0, 1, 1, 1] * 20, float)
    correct_b = np.array([0, 1, 0, 1, 0, 1, 0, 1] * 20, float)
    ones = np.ones_like(correct_a)
    c = stats.compare(stats.Ratio(correct_a, ones), stats.Ratio(correct_b, ones), higher_is_better=True, paired=True)
    assert c.verdict == "better" and c.diff == pytest.approx(0.875 - 0.5)


def test_same_seed_same_numbers_other_seed_other_numbers():
    a, b = ppl(*blocks(4)), ppl(*blocks(5))
    one = stats.compare(a, b, False, paired=True, seed=7)
    assert stats.compare(a, b, False, paired=True, seed=7) == one
    assert stats.interval(a, seed=7) == stats.interval(a, seed=7)
    assert stats.compare(a, b, False, paired=True, seed=8).low != one.low


def test_seed_groups_widen_the_interval_and_say_so():
    nll, tok = blocks(6)
    # Three seeds of one config whose perplexities spread by a few percent: training noise.
    group = stats.Ratio(np.stack([nll * f for f in (0.97, 1.0, 1.03)]), np.stack([tok] * 3), "exp")
    single = ppl(nll, tok)
    assert group.n_seeds == 3 and group.value() == pytest.approx(np.mean(group.per_seed()))
    c_single = stats.compare(ppl(nll * 0.99, tok), single, False, paired=True)
    c_group = stats.compare(ppl(nll * 0.99, tok), group, False, paired=True)
    assert c_single.verdict == "better" and c_group.verdict == "within noise"
    assert "seeds (1 vs 3)" in c_group.noise and "seeds" not in c_single.noise
    assert "paired" in c_single.noise


def test_same_units_detects_another_tokenization():
    a = {"n_tokens": np.array([63, 63]), "n_bytes": np.array([250, 270])}
    assert stats.same_units(a, {k: v.copy() for k, v in a.items()})
    assert not stats.same_units(a, {"n_tokens": np.array([63, 63]), "n_bytes": np.array([240, 281])})
    assert not stats.same_units(a, {"n_tokens": np.array([63]), "n_bytes": np.array([250])})


def test_seed_groups_and_differing_params():
    configs = {
        "a": {"seed": 1, "train.learning_rate": 1e-4},
        "b": {"seed": 2, "train.learning_rate": 1e-4},
        "c": {"seed": 1, "train.learning_rate": 3e-4},
    }
    assert stats.seed_groups(configs) == [["a", "b"], ["c"]]
    assert stats.differing(configs) == ["seed", "train.learning_rate"]
    assert stats.differing({"a": {"x": 1}, "b": {"x": 1, "y": 2}}) == ["y"]
    assert stats.mean_spread([2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2)))
    assert stats.mean_spread([5.0]) == (5.0, 0.0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="same non-empty"):
        stats.Ratio(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="same units"):
        stats.compare(ppl(*blocks(0, n=8)), ppl(*blocks(0, n=9)), False, paired=True)


def test_a_group_of_seeds_on_different_blocks_compares_unpaired():
    # The validation sample can depend on the seed: members of a group then scored different blocks.
    a, b = ppl(*blocks(7, n=30)), ppl(*blocks(8, n=34))
    group = stats.Ratio.group([a, b])
    assert group.n_seeds == 2 and group.n_units is None
    assert group.value() == pytest.approx((a.value() + b.value()) / 2)
    point, lo, hi = stats.interval(group)
    assert lo < point < hi
    with pytest.raises(ValueError, match="same units"):
        stats.compare(group, a, False, paired=True)
    assert stats.compare(group, a, False, paired=False).verdict == "within noise"


@pytest.mark.parametrize("k", [2, 3])
def test_a_seed_groups_spread_is_not_understated(k):
    """k seeds resampled with replacement vary by (k-1)/k of the seeds' variance; compare scales that back.
    Here the units carry no noise (each seed's NLL per token is the same on every block), so the bootstrap
    spread of the group's perplexity is the seeds' alone: sd(per seed, ddof=1) / sqrt(k)."""
    tok = np.full(32, 63.0)
    rates = [3.0, 3.05, 3.1][:k]
    group = stats.Ratio(np.stack([tok * r for r in rates]), np.stack([tok] * k), "exp")
    boot = stats._bootstrap([group], False, 4000, 0)[0]
    expected = np.std(group.per_seed(), ddof=1) / math.sqrt(k)
    assert np.std(boot) == pytest.approx(expected, rel=0.05)
