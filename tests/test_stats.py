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
    with pytest.raises(ValueError, match=r"^num and den must be the same non-empty 1-D arrays, one per seed$"):
        stats.Ratio(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"^paired resampling needs the same units in every run$"):
        stats.compare(ppl(*blocks(0, n=8)), ppl(*blocks(0, n=9)), False, paired=True)
    assert stats.Ratio(np.ones(1), np.ones(1)).value() == 1.0  # one unit is enough


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


# ---- The parts one at a time ------------------------------------------------------------------------

def test_each_resampling_says_what_it_draws():
    assert stats.resampling(2).describe() == "bootstrap over 2 independent units"  # runs of round(2^(1/3)) = 1
    assert stats.resampling(8).describe("blocks") == "block bootstrap over stream order (4 runs of 2 consecutive blocks, circular)"
    docs = stats.resampling(8, np.array([3, 3, 5, 5, 7, 7, 9, 9]))
    assert docs.describe() == "document bootstrap (4 documents, each resampled whole)"
    assert stats.resampling(8, np.arange(8)).describe("examples") == "bootstrap over 8 independent examples"
    assert stats.resampling(8, np.array([0, 0, 0, 0, 1, 1, 1, 2])).method == "stream blocks"  # 3 documents < MIN_DOCS
    assert stats.resampling(8, np.array([0, 0, 0, 0, 1, 1, 1, 2]), min_docs=3).method == "documents"
    assert (stats.block_length(1), stats.block_length(8), stats.block_length(32), stats.block_length(100)) == (1, 2, 3, 5)
    # The method names key lmtune.report.analysis's explanation of each interval.
    for plan, method, n_draw in ((stats.resampling(2), "units", 2), (stats.resampling(8, np.arange(8)), "units", 8),
                                 (stats.resampling(4), "stream blocks", 2), (stats.resampling(32), "stream blocks", 11),
                                 (docs, "documents", 4)):
        assert (plan.method, plan.n_draw) == (method, n_draw)


def test_resample_counts_follow_the_draws():
    """Each resample is drawn from the generator as `integers(0, entities, (n, n_draw))`: the counts are those
    draws, as units (a run from unit s covers s .. s + block_len - 1, wrapping around) or as whole documents."""
    def starts(e, n, k):
        return np.random.default_rng(5).integers(0, e, size=(n, k))

    units = stats.Resampling("units", 6, 6)
    got, s = units.counts(np.random.default_rng(5), 3), starts(6, 3, 6)
    assert got.shape == (3, 6) and got.tolist() == [[list(row).count(u) for u in range(6)] for row in s]
    runs = stats.Resampling("stream blocks", 5, 2, block_len=3)
    got, s = runs.counts(np.random.default_rng(5), 4), starts(5, 4, 2)
    assert got.tolist() == [[sum((u - x) % 5 < 3 for x in row) for u in range(5)] for row in s]
    doc = np.array([0, 0, 1, 2, 2, 2])
    docs = stats.Resampling("documents", 6, 3, doc)
    assert docs.n_entities == 3 and runs.n_entities == 5
    got, s = docs.counts(np.random.default_rng(5), 4), starts(3, 4, 3)
    assert got.tolist() == [[list(row).count(d) for d in doc] for row in s]


def test_scale_undoes_the_bootstraps_shrinkage():
    assert stats.Resampling("units", 10, 10).scale == pytest.approx(math.sqrt(10 / 9))
    assert stats.Resampling("units", 1, 1).scale == 1.0
    # 4 runs of 3 units over 10 units: each resample holds 12 units, 1.2x the data.
    assert stats.Resampling("stream blocks", 10, 4, block_len=3).scale == pytest.approx(math.sqrt(4 / 3 * 12 / 10))
    # 4 documents of 2.5 units on average: a resample of 4 documents holds 10 units.
    docs = stats.Resampling("documents", 10, 4, np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3]))
    assert docs.scale == pytest.approx(math.sqrt(4 / 3))


def test_smallest_detectable_difference():
    # (z_0.975 + z_0.80) = 1.960 + 0.842; with df 10, (t_0.975 + t_0.80) = 2.228 + 0.879.
    assert stats.detectable(1.0) == pytest.approx(2.8016, abs=1e-4)
    assert stats.detectable(2.0) == pytest.approx(2 * 2.8016, abs=2e-4)
    assert stats.detectable(2.0, df=10) == pytest.approx(2 * 3.1072, abs=2e-4)
    assert stats.detectable(1.0, df=10) == pytest.approx(3.1072, abs=1e-4)
    assert stats.detectable(1.0, level=0.90, power=0.5) == pytest.approx(1.6449, abs=1e-4)
    assert stats.detectable(1.0, level=0.90, power=0.5, df=10) == pytest.approx(1.8125, abs=1e-4)
    assert stats._t(0.95, 3) == pytest.approx(3.1824, abs=1e-4)


def test_noise_and_groups():
    one, two = ppl(*blocks(1, n=8)), stats.Ratio(np.ones((2, 8)), np.ones((2, 8)))
    assert stats.noise_covered(one, one, True) == "eval sample (paired blocks)"
    assert stats.noise_covered(one, one, False) == "eval sample (unpaired)"
    assert stats.noise_covered(one, two, False) == "eval sample (unpaired) + seeds (1 vs 2)"
    assert stats.noise_covered(two, one, True) == "eval sample (paired blocks) + seeds (2 vs 1)"
    with pytest.raises(ValueError, match=r"^a group's members must share one transform$"):
        stats.Ratio.group([one, two])
    d = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    a = stats.Ratio(np.ones(8), np.ones(8), "exp", d)
    b = stats.Ratio(2 * np.ones(8), np.ones(8), "exp", d + 10)
    g = stats.Ratio.group([a, b])
    assert g.transform == "exp" and [r.tolist() for r in g.doc] == [d.tolist(), (d + 10).tolist()]
    assert g.num[1].tolist() == [2.0] * 8 and g.n_units == 8 and g.resampling(1).method == "documents"
    assert stats.Ratio.group([a, stats.Ratio(np.ones(8), np.ones(8), "exp")]).doc is None
    with pytest.raises(ValueError, match=r"^doc must give one document id per unit$"):
        stats.Ratio(np.ones(8), np.ones(8), "exp", np.zeros(7))
    assert a.resampling().method == "documents"  # row 0 by default
    with pytest.raises(ValueError, match=r"^transform must be one of \['exp', 'identity'\]$"):
        stats.Ratio(np.ones(8), np.ones(8), "log")
    with pytest.raises(ValueError, match="same non-empty"):
        stats.Ratio(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="same non-empty"):
        stats.Ratio(np.ones(0), np.ones(0))


def test_degrees_of_freedom():
    r32, r8 = ppl(*blocks(1, n=32)), ppl(*blocks(1, n=8))  # 11 runs of 3 blocks; 4 runs of 2
    assert stats._df([r32, r32], True) == 10
    assert stats._df([r32, r8], True) == 10 and stats._df([r8, r32], True) == 3  # paired: the first run's draws
    assert stats._df([stats.Ratio(np.ones(2), np.ones(2))], False) == 1  # 2 units: 1 df
    assert stats._df([r32, r8], False) == 3  # the fewest independent draws
    assert stats._df([r32, r8], False, np.array([0.0, 1.0])) == 3  # no seed group: the units' alone
    # A group of 2 seeds whose metrics are 0.4 and 0.6: var / k = 0.02 / 2 = 0.01 with 1 df; the rest of a total
    # variance of 0.05 (0.04) is the units' with 3 df. Welch-Satterthwaite: 0.05^2 / (0.01^2 / 1 + 0.04^2 / 3) = 3.9.
    group = stats.Ratio(np.stack([np.full(8, 0.4), np.full(8, 0.6)]), np.ones((2, 8)))
    a = math.sqrt(0.05)
    assert stats._df([group], False, np.array([-a, a])) == 3
    assert stats._df([group], False) == 3
    # The seeds' part above the total: the units' part is 0, the seeds' 1 df decides.
    b = math.sqrt(0.005)
    assert stats._df([group], False, np.array([-b, b])) == 1
    same = stats.Ratio(np.ones((2, 8)), np.ones((2, 8)))  # nothing varies: no denominator, the units' df
    assert stats._df([same], False, np.zeros(2)) == 3
    big = stats.Ratio(np.stack([np.full(32, 0.4), np.full(32, 0.6)]), np.ones((2, 32)))
    c = math.sqrt(0.0101)  # almost all of it the units' (10 df): 0.0101^2 / (0.01^2 / 1 + 0.0001^2 / 10) = 1.02
    assert stats._df([big], False, np.array([-c, c])) == 1
    d = math.sqrt(1.01)  # almost all of it the units': 1.01^2 / (0.01^2 + 1^2 / 10) = 10.2
    assert stats._df([big], False, np.array([-d, d])) == 10
    assert stats._df([big, big], True, np.array([-d, d])) == 10


def test_interval_is_the_point_plus_minus_t_bootstrap_sds():
    r = ppl(*blocks(2, n=32))
    for level, n_boot, seed in ((0.95, 2000, 0), (0.8, 300, 3)):
        boot = stats._bootstrap([r], False, n_boot, seed)[0]
        half = stats._t(level, 10) * np.std(boot)
        assert stats.interval(r, level, n_boot, seed) == pytest.approx((r.value(), r.value() - half, r.value() + half))
    assert stats._interval(1.0, np.array([0.0, 2.0]), 0.95, 3) == pytest.approx((1 - 3.1824, 1 + 3.1824), abs=1e-4)


def test_comparison_fields():
    a, b = ppl(*blocks(3, n=32)), ppl(*blocks(4, n=32))
    group = stats.Ratio.group([ppl(blocks(5, n=32)[0] * f, blocks(5, n=32)[1]) for f in (0.98, 1.0, 1.02)])
    close = ppl(blocks(5, n=32)[0] * 1.01, blocks(5, n=32)[1])  # the group's blocks: paired, they move together
    for a, b, paired, level, n_boot, seed in ((a, b, True, 0.95, 2000, 0), (a, b, False, 0.9, 500, 2),
                                              (group, b, True, 0.95, 600, 1), (group, close, True, 0.95, 600, 1)):
        c = stats.compare(a, b, False, paired, level, n_boot, seed)
        boot = stats._bootstrap([a, b], paired, n_boot, seed)
        df = stats._df([a, b], paired, boot[0] - boot[1])
        t, sd, sd_log = stats._t(level, df), np.std(boot[0] - boot[1]), np.std(np.log(boot[0] / boot[1]))
        ratio = a.value() / b.value()
        assert (c.paired, c.level, c.df, c.noise) == (paired, level, df, stats.noise_covered(a, b, paired))
        assert c.diff == pytest.approx(a.value() - b.value()) and c.rel == pytest.approx(ratio - 1)
        assert (c.low, c.high) == pytest.approx((c.diff - t * sd, c.diff + t * sd))
        assert (c.sd, c.sd_log) == pytest.approx((sd, sd_log))
        assert (c.rel_low, c.rel_high) == pytest.approx((ratio * math.exp(-t * sd_log) - 1, ratio * math.exp(t * sd_log) - 1))
    assert c.df != stats._df([group, close], True)  # the seeds' share of the spread counts
    boot = stats._bootstrap([group, close], True, 600, 1)
    assert c.df != stats._df([group, close], True, boot[0] + boot[1])  # the difference's spread, not the sum's
    lower = ppl(blocks(3, n=32)[0] * 0.9, blocks(3, n=32)[1])
    higher = ppl(*blocks(3, n=32))
    assert stats.compare(lower, higher, False, True).verdict == "better"   # lower perplexity
    assert stats.compare(lower, higher, True, True).verdict == "worse"     # were higher better
    assert stats.compare(higher, lower, True, True).verdict == "better"
    assert stats.compare(higher, lower, False, True).verdict == "worse"
    zero = stats.Ratio(np.zeros(8), np.ones(8))  # an accuracy of 0: no ratio, but a difference
    c = stats.compare(zero, stats.Ratio(np.ones(8), np.ones(8)), True, True)
    assert c.verdict == "worse" and c.diff == -1 and c.rel == -1


def test_same_units_and_differing_edge_cases():
    a = {"n_tokens": np.array([1, 2])}
    assert stats.same_units(a, {"n_tokens": np.array([1, 2]), "n_bytes": np.array([9, 9])})  # only shared columns
    assert not stats.same_units({"x": np.array([1])}, {"x": np.array([1])})  # no count column: not the same units
    assert stats.same_units({"x": np.array([1])}, {"x": np.array([1])}, keys=("x",))
    assert stats.differing({"a": {"x": 1, "y": [1]}, "b": {"x": 1, "y": [1]}}) == []
    assert stats.differing({"a": {"x": 1}, "b": {"x": 1.0}}) == ["x"]  # compared as written (repr)
    assert stats.differing({"a": {"x": None}, "b": {}}) == ["x"]
    assert stats.seed_groups({"a": {"s": 1, "x": 1}, "b": {"s": 2, "x": 1}}, seed_key="s") == [["a", "b"]]
    assert stats.seed_groups({"a": {"seed": 1, "x": 1}, "b": {"seed": 2, "x": 1}}, seed_key="s") == [["a"], ["b"]]
    assert stats.mean_spread([1, 2, 6]) == (3.0, pytest.approx(math.sqrt(7)))


def expected_bootstrap(ratios, paired, n_boot, seed):
    """_bootstrap spelled out: per chunk of 250 resamples, the seed draws of a group (k > 1), then each row's unit
    counts (shared by all rows when paired, drawn from the first run's plan); each resampled metric is pulled
    from the full-sample value by the plan's scale, and a group's mean over its drawn seeds by sqrt(k / (k-1))."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(ratios), n_boot))
    for start in range(0, n_boot, 250):
        n = min(250, n_boot - start)
        shared = None
        if paired:
            plan = ratios[0].resampling(0)
            shared = (plan.counts(rng, n), plan.scale)
        for i, r in enumerate(ratios):
            k = r.n_seeds
            draws = rng.integers(0, k, size=(n, k)) if k > 1 else None
            rows = []
            for row in range(k):
                plan = r.resampling(row)
                w, scale = shared if paired else (plan.counts(rng, n), plan.scale)
                full = r.num[row].sum() / r.den[row].sum()
                rows.append(stats.TRANSFORMS[r.transform](full + scale * ((w @ r.num[row]) / (w @ r.den[row]) - full)))
            per_seed = np.stack(rows, 1)
            if k == 1:
                out[i, start:start + n] = per_seed[:, 0]
            else:
                centre = per_seed.mean(1)
                drawn = np.take_along_axis(per_seed, draws, axis=1).mean(1)
                out[i, start:start + n] = centre + math.sqrt(k / (k - 1)) * (drawn - centre)
    return out


def test_bootstrap_draws_as_specified():
    d = np.repeat(np.arange(8), 4)
    plain, with_docs = ppl(*blocks(9, n=32)), stats.Ratio(*blocks(10, n=32), "exp", d)
    group = stats.Ratio.group([ppl(*blocks(11, n=30)), ppl(*blocks(12, n=34)), ppl(*blocks(13, n=30))])
    for ratios, paired in (([plain], False), ([plain, with_docs], True), ([with_docs, plain], True),
                           ([group, plain], False), ([with_docs], False)):
        got = stats._bootstrap(ratios, paired, 300, 4)  # two chunks: 250 and 50
        assert got == pytest.approx(expected_bootstrap(ratios, paired, 300, 4), rel=1e-12), (len(ratios), paired)


def test_interval_of_a_group_uses_its_seeds_degrees_of_freedom():
    group = stats.Ratio.group([ppl(blocks(14, n=32)[0] * f, blocks(14, n=32)[1]) for f in (0.97, 1.03)] +
                              [ppl(*blocks(15, n=8))])
    boot = stats._bootstrap([group], False, 500, 1)[0]
    df = stats._df([group], False, boot)
    assert df != stats._df([group], False) and df != stats._df([group], True, boot)
    half = stats._t(0.9, df) * np.std(boot)
    assert stats.interval(group, 0.9, 500, 1) == pytest.approx((group.value(), group.value() - half, group.value() + half))


def test_ratios_of_zero_compare_without_numpy_warnings():
    """Accuracy 0 against 1 (log 0) and 0 against 0 (0 / 0): the relative change is inf or nan, quietly."""
    import warnings

    zero, one = stats.Ratio(np.zeros(8), np.ones(8)), stats.Ratio(np.ones(8), np.ones(8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = stats.compare(zero, one, True, True)
        assert c.rel == -1 and c.verdict == "worse"
        same = stats.compare(zero, zero, True, True)
        assert same.verdict == "within noise" and math.isnan(same.rel)
