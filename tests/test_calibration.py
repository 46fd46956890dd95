"""Are compare's 95% intervals and verdicts calibrated? Checked by simulation (pure numpy, seeded, seconds).

Each scenario draws a few hundred synthetic validation sets, scored by two runs whose true perplexity
ratio is known, and asks `stats.compare` (the function behind every verdict) for the interval of the
ratio. A calibrated 95% interval covers the truth in 95% of the sets; when the runs are truly equal the
verdict says "better" or "worse" in 5% of them. With N = 300 sets the observed share has a standard
error of sqrt(0.95 * 0.05 / 300) = 1.3 points, so the bounds are 93-97% coverage and a false-verdict rate
of at most 5% + 1.645 * 1.3 = 7.1% (a one-sided 95% test that the rate is not above 5%).

The model of a validation set: per unit (a 255-token block, or a shorter one), the base model's NLL per
token varies with the unit's difficulty (shared by both runs, so pairing cancels it); the tuned run's
change per token is the true log ratio + noise per unit (+ per document, or along the stream).
tests/stats_patches.py breaks lmtune/stats.py in five ways and shows each fails a test here.
"""
import numpy as np
import pytest

from lmtune import stats

N_SETS = 300
N_BOOT = 400          # per set: enough for the 2.5% tails to within ~1 point of coverage
TRUE_LOG_RATIO = 0.01  # the tuned run is truly 1.0% worse in perplexity
UNIT_SD = 0.02        # per-unit noise of the change per token: ~2% of a block's NLL, like the default's blocks


def validation_set(rng, scenario, log_ratio, n_docs=32, per_doc=1, doc_sd=0.02):
    """(tuned, base) per-unit NLL sums, token counts and document ids, in stream order."""
    n = n_docs * per_doc
    doc = np.repeat(np.arange(n_docs), per_doc)
    tokens = rng.integers(20, 256, n).astype(float) if scenario == "unequal" else np.full(n, 255.0)
    difficulty = 3.3 + rng.normal(0, 0.3, n_docs)[doc] + rng.normal(0, 0.4, n)
    change = log_ratio + rng.normal(0, UNIT_SD, n)
    if scenario == "documents":  # every document moves the change: its topic, its speaker
        change = change + rng.normal(0, doc_sd, n_docs)[doc]
    if scenario == "unequal":
        # Short units gain more per token (less context to begin with). The truth is per token, so the
        # token-weighted mean change is log_ratio: 100/t averages to 100/E[t] = 100/137.5 per token.
        change = change + 0.03 * (100 / tokens - 100 / 137.5)
    base = difficulty * tokens
    return base + change * tokens, base, tokens, doc


def calibration(scenario, with_doc=False, n_sets=N_SETS, **kw) -> tuple[float, float, str]:
    """(coverage of the true ratio, false better/worse rate when equal, method used)."""
    rng = np.random.default_rng(12345)
    covered = false = 0
    for i in range(n_sets):
        for log_ratio in (TRUE_LOG_RATIO, 0.0):
            tuned, base, tokens, doc = validation_set(rng, scenario, log_ratio, **kw)
            d = doc if with_doc else None
            a, b = stats.Ratio(tuned, tokens, "exp", d), stats.Ratio(base, tokens, "exp", d)
            c = stats.compare(a, b, higher_is_better=False, paired=True, n_boot=N_BOOT, seed=i)
            if log_ratio:
                covered += c.rel_low <= np.expm1(log_ratio) <= c.rel_high
            else:
                false += c.verdict != "within noise"
    return covered / n_sets, false / n_sets, a.resampling().method


def assert_calibrated(coverage, false_rate):
    assert 0.93 <= coverage <= 0.97, f"95% interval covers the truth in {coverage:.1%} of {N_SETS} sets"
    assert false_rate <= 0.071, f"better/worse for equal runs in {false_rate:.1%} of {N_SETS} sets"


def test_independent_units():
    coverage, false_rate, method = calibration("independent")
    assert method == "stream blocks"  # no document ids: units are resampled in runs of neighbours
    assert_calibrated(coverage, false_rate)


def test_document_effect_with_document_ids():
    coverage, false_rate, method = calibration("documents", with_doc=True, n_docs=20, per_doc=3)
    assert method == "documents"
    assert_calibrated(coverage, false_rate)


def test_document_effect_few_documents_with_ids():
    # The default's shape: 32 blocks from 4 speeches, blocks.csv naming each block's speech. Resampled as stream
    # blocks instead, the same sets were covered in 72% (the neighbours share only part of the effect).
    coverage, false_rate, method = calibration("documents", with_doc=True, n_docs=4, per_doc=8)
    assert method == "documents"
    assert_calibrated(coverage, false_rate)


def test_document_effect_without_ids_short_documents():
    # A blocks.csv without a document column (a run from before evaluate wrote one): stream order only;
    # neighbours of one document share its effect.
    coverage, false_rate, method = calibration("documents", n_docs=16, per_doc=2)
    assert method == "stream blocks"
    assert_calibrated(coverage, false_rate)


def test_unequal_token_counts():
    coverage, false_rate, _ = calibration("unequal")
    assert_calibrated(coverage, false_rate)


def test_independent_resampling_is_overconfident_with_a_document_effect():
    """The old method (every unit drawn on its own) on correlated units: the interval is too narrow."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(N_SETS):
        tuned, base, tokens, _ = validation_set(rng, "documents", TRUE_LOG_RATIO, n_docs=20, per_doc=3)
        units = np.arange(len(tokens))  # each unit its own document: the i.i.d. bootstrap
        c = stats.compare(stats.Ratio(tuned, tokens, "exp", units), stats.Ratio(base, tokens, "exp", units),
                          False, True, n_boot=N_BOOT, seed=i)
        covered += c.rel_low <= np.expm1(TRUE_LOG_RATIO) <= c.rel_high
    assert covered / N_SETS < 0.90


def test_smallest_detectable_difference_has_its_power():
    """A true change of exactly the detectable size is called in ~80% of the sets (70-90% here)."""
    rng = np.random.default_rng(3)
    tuned, base, tokens, _ = validation_set(rng, "independent", 0.0)
    c = stats.compare(stats.Ratio(tuned, tokens, "exp"), stats.Ratio(base, tokens, "exp"), False, True, n_boot=N_BOOT)
    size = stats.detectable(c.sd_log, df=c.df)  # as compare reports it
    called = 0
    for i in range(200):
        tuned, base, tokens, _ = validation_set(rng, "independent", size)
        c = stats.compare(stats.Ratio(tuned, tokens, "exp"), stats.Ratio(base, tokens, "exp"), False, True,
                          n_boot=N_BOOT, seed=i)
        called += c.verdict == "worse"
    assert 0.70 <= called / 200 <= 0.90, called / 200


@pytest.mark.parametrize("k", [2, 3])
def test_small_seed_groups_are_not_overconfident(k):
    """Two configs, truly equal, k seeds each whose training noise moves perplexity by ~2% (more than the
    evaluation noise, as when a new head is initialised by the seed): false verdicts stay rare although k
    seeds drawn with replacement show only (k-1)/k of the seed variance, and that is estimated from k - 1
    degrees of freedom: with the units' t quantile (df 10) instead, 12% (k = 2) and 8% (k = 3) here."""
    rng = np.random.default_rng(11 + k)
    false = 0
    for i in range(N_SETS):
        rows = {side: [] for side in "ab"}
        _, base, tokens, _ = validation_set(rng, "independent", 0.0)
        for side in "ab":
            for _ in range(k):  # the seeds of one config score the same blocks, each its own shift
                rows[side].append(base + (rng.normal(0, 0.02) + rng.normal(0, UNIT_SD / 2, len(tokens))) * tokens)
        a = stats.Ratio(np.stack(rows["a"]), np.stack([tokens] * k), "exp")
        b = stats.Ratio(np.stack(rows["b"]), np.stack([tokens] * k), "exp")
        false += stats.compare(a, b, False, paired=True, n_boot=N_BOOT, seed=i).verdict != "within noise"
    assert false / N_SETS <= 0.071, false / N_SETS


def test_verdicts_against_the_picked_best_stay_calibrated_as_a_family():
    """k truly equal runs; the best is picked from the same numbers, the others compared with it. At 95%
    each, some verdict said better/worse in 11% (k = 3) and 27% (k = 5) of the sets; at 1 - 0.05/(k-1)
    (Bonferroni, what compare does without --against) in at most 5% + noise."""
    k = 4
    level = 1 - (1 - stats.LEVEL) / (k - 1)
    rng = np.random.default_rng(5)
    family = 0
    for i in range(N_SETS):
        _, base, tokens, _ = validation_set(rng, "independent", 0.0)
        runs = [stats.Ratio(base + rng.normal(0, UNIT_SD, len(tokens)) * tokens, tokens, "exp") for _ in range(k)]
        best = min(runs, key=stats.Ratio.value)
        family += any(stats.compare(r, best, False, True, level, n_boot=N_BOOT, seed=i).verdict != "within noise"
                      for r in runs if r is not best)
    assert family / N_SETS <= 0.071, family / N_SETS
