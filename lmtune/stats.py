"""Statistics for comparing runs: bootstrap intervals, paired bootstrap verdicts, seed groups.

Pure functions over numpy arrays (no files, no DVC), so every rule here is unit-tested on its own, and
tests/test_calibration.py checks by simulation that the 95% intervals cover the truth 95% of the time.

Every metric compare ranks by is a ratio of sums over evaluation units (validation blocks, or examples
for a classifier), seen through a fixed transform:
    perplexity    = exp(sum(nll) / sum(tokens))          per block: summed NLL in nats, scored tokens
    bits per byte = sum(nll / ln 2) / sum(bytes)
    accuracy      = sum(correct) / sum(1)
A `Ratio` holds those per-unit sums for one run, or for k runs that differ only in their seed (rows).

Two kinds of noise:
- evaluation sample: which units happened to be in the validation set. Units of one document share its
  topic and speaker, so they are not independent: a resample draws whole documents when the units name
  enough of them (`MIN_DOCS`), else runs of consecutive units in stream order (a circular block
  bootstrap), so the correlation between neighbours stays inside each draw (`resampling`). Comparing
  two runs on the *same* units (paired) cancels the unit-to-unit difficulty both runs share.
- training: what the seed changes (init of new weights, data order, dropout). Only several seeds of the
  same config show it; a group's resamples also draw its seeds with replacement.

Small samples: resampling m independent things with replacement gives a spread (m-1)/m of the true one
(the bootstrap's plug-in variance divides by m, not m-1). With m = 4 documents or 2 seeds that is 25%
or 50% too little, so every resampled value is pulled away from the full-sample value by sqrt(m/(m-1)).
And the spread is itself estimated from those m draws, so intervals are the estimate +- a Student t
quantile (m - 1 degrees of freedom) times the bootstrap standard deviation (`_interval`, `_df`).
"""
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

N_BOOT = 2000   # resamples: the bootstrap sd to ~1.6% (1 / sqrt(2 * 2000)), the interval ends with it
LEVEL = 0.95
POWER = 0.80    # for the smallest detectable difference
BOOT_SEED = 0   # fixed: the same inputs give the same intervals and verdicts, byte for byte
# Fewer documents than this: stream blocks instead. With 4 the interval is wide (t_3 = 3.18 sd), and
# rightly so: simulated with a per-document effect, 4 documents x 8 blocks resampled as stream blocks
# covered the truth in 72% of sets, resampled as documents in 95%.
MIN_DOCS = 4
_CHUNK = 250    # resamples built at a time (a [chunk, n_units] weight matrix), to bound memory

TRANSFORMS = {"exp": np.exp, "identity": lambda x: x}


@dataclass(frozen=True, eq=False)
class Resampling:
    """Which units move together: each resample draws `n_draw` entities with replacement, an entity being
    one unit, one document (`doc_index`: each unit's document) or a run of `block_len` consecutive units
    starting at any unit (circular, so every unit is equally likely to be drawn)."""
    method: str                  # "units" | "documents" | "stream blocks"
    n_units: int
    n_draw: int
    doc_index: np.ndarray | None = None
    block_len: int = 1

    @property
    def n_entities(self) -> int:
        return int(self.doc_index.max()) + 1 if self.method == "documents" else self.n_units

    @property
    def scale(self) -> float:
        """Factor on each resample's deviation from the full-sample value (see the module notes).

        m/(m-1) for m draws; times (units per resample)/(units), so a resample of a few more units than
        the data (n_draw stream blocks of block_len) does not look more precise than the data is.
        """
        m = self.n_draw
        size = m * (self.n_units / self.n_entities if self.method == "documents" else self.block_len)
        return math.sqrt(m / (m - 1) * size / self.n_units) if m > 1 else 1.0

    def counts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, n_units]: how often each unit is in each of n resamples."""
        e = self.n_entities
        drawn = rng.integers(0, e, size=(n, self.n_draw)) + e * np.arange(n)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=n * e).reshape(n, e).astype(float)
        if self.method == "documents":
            return counts[:, self.doc_index]
        if self.method == "stream blocks":  # a run starting at unit s covers s .. s + block_len - 1
            return sum(np.roll(counts, j, axis=1) for j in range(self.block_len))
        return counts

    def describe(self, units: str = "units") -> str:
        if self.method == "documents":
            return f"document bootstrap ({self.n_entities} documents, each resampled whole)"
        if self.method == "stream blocks":
            return (f"block bootstrap over stream order ({self.n_draw} runs of {self.block_len} consecutive "
                    f"{units}, circular)")
        return f"bootstrap over {self.n_units} independent {units}"


def block_length(n_units: int) -> int:
    """n^(1/3), the usual order for a block bootstrap of a mean (Hall, Horowitz and Jing 1995): 32 -> 3."""
    return max(1, round(n_units ** (1 / 3)))


def resampling(n_units: int, doc: np.ndarray | None = None, min_docs: int = MIN_DOCS) -> Resampling:
    """Documents when `doc` (one id per unit) names at least `min_docs` of them; else stream blocks.

    Units must be in stream order (by document, then position), so neighbours are adjacent.
    """
    if doc is not None:
        ids, inverse = np.unique(np.asarray(doc), return_inverse=True)
        if len(ids) == n_units:
            return Resampling("units", n_units, n_units)
        if len(ids) >= min_docs:
            return Resampling("documents", n_units, len(ids), inverse)
    size = block_length(n_units)
    if size == 1:
        return Resampling("units", n_units, n_units)
    return Resampling("stream blocks", n_units, max(2, round(n_units / size)), block_len=size)


@dataclass(frozen=True, eq=False)
class Ratio:
    """transform(sum(num) / sum(den)) over units, for one run or for k runs that differ only in seed.

    num and den: one 1-D array per seed (a 1-D array is one seed; a 2-D array is [seeds, units]). Seeds
    may have scored different units (the validation sample can depend on the seed), so rows may differ
    in length; only a paired comparison needs them all on the same units. doc: the document id of each
    unit (same shapes), or None when the units do not say; units are in stream order either way.
    """
    num: tuple
    den: tuple
    transform: str = "identity"
    doc: tuple | None = None

    def __post_init__(self):
        num, den = _rows(self.num), _rows(self.den)
        if not num or len(num) != len(den) or any(a.ndim != 1 or a.shape != b.shape or a.size == 0 for a, b in zip(num, den)):
            raise ValueError("num and den must be the same non-empty 1-D arrays, one per seed")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}")
        doc = None if self.doc is None else _rows(self.doc)
        if doc is not None and [d.shape for d in doc] != [a.shape for a in num]:
            raise ValueError("doc must give one document id per unit")
        object.__setattr__(self, "num", tuple(num))
        object.__setattr__(self, "den", tuple(den))
        object.__setattr__(self, "doc", None if doc is None else tuple(doc))

    @classmethod
    def group(cls, members: list["Ratio"]) -> "Ratio":
        """The seed group of several runs (each row of each member becomes one seed)."""
        if len({m.transform for m in members}) != 1:
            raise ValueError("a group's members must share one transform")
        doc = None if any(m.doc is None for m in members) else tuple(r for m in members for r in m.doc)
        return cls(tuple(r for m in members for r in m.num), tuple(r for m in members for r in m.den),
                   members[0].transform, doc)

    @property
    def n_seeds(self) -> int:
        return len(self.num)

    @property
    def n_units(self) -> int | None:
        """Units per seed, or None when seeds scored different numbers of units."""
        sizes = {r.size for r in self.num}
        return sizes.pop() if len(sizes) == 1 else None

    def resampling(self, row: int = 0) -> Resampling:
        return resampling(self.num[row].size, None if self.doc is None else self.doc[row])

    def per_seed(self) -> np.ndarray:
        """The metric of each seed on all its units."""
        return TRANSFORMS[self.transform](np.array([n.sum() / d.sum() for n, d in zip(self.num, self.den)]))

    def value(self) -> float:
        """The point estimate: the mean over seeds of each seed's metric."""
        return float(self.per_seed().mean())

    def _resampled(self, weights, seed_draws: np.ndarray) -> np.ndarray:
        """Metric per resample. weights(row) -> ([B, n_units] counts, scale); seed_draws: [B, k] seeds."""
        f = TRANSFORMS[self.transform]
        per_seed = []
        for i, (n, d) in enumerate(zip(self.num, self.den)):
            w, scale = weights(i)
            full = n.sum() / d.sum()
            per_seed.append(f(full + scale * ((w @ n) / (w @ d) - full)))  # [B]
        per_seed = np.stack(per_seed, 1)
        drawn = np.take_along_axis(per_seed, seed_draws, axis=1).mean(1)
        k = self.n_seeds
        if k == 1:
            return drawn
        centre = per_seed.mean(1)  # k seeds drawn with replacement: spread (k-1)/k of the truth, undone here
        return centre + math.sqrt(k / (k - 1)) * (drawn - centre)


def _rows(x) -> list[np.ndarray]:
    """One 1-D float array per seed, from a 1-D array (one seed), a 2-D array or a sequence of arrays."""
    if isinstance(x, np.ndarray):
        return [x.astype(float)] if x.ndim == 1 else [np.asarray(r, float) for r in x]
    return [np.asarray(r, float) for r in x]


def _seed_draws(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    # One seed has nothing to resample: keep it (draw index 0) without consuming randomness.
    return np.zeros((n, 1), int) if k == 1 else rng.integers(0, k, size=(n, k))


def _bootstrap(ratios: list[Ratio], paired: bool, n_boot: int, seed: int) -> np.ndarray:
    """[len(ratios), n_boot] resampled metrics.

    paired: every seed row of every ratio is on the same units, and each resample draws one set of
    units (documents, stream blocks) for all of them; otherwise each row draws its own.
    """
    rng = np.random.default_rng(seed)
    sizes = {r.size for ratio in ratios for r in ratio.num}
    if paired and len(sizes) != 1:
        raise ValueError("paired resampling needs the same units in every run")
    plans = [[ratio.resampling(i) for i in range(ratio.n_seeds)] for ratio in ratios]
    out = np.empty((len(ratios), n_boot))
    for start in range(0, n_boot, _CHUNK):
        n = min(_CHUNK, n_boot - start)
        shared = (plans[0][0].counts(rng, n), plans[0][0].scale) if paired else None
        for i, r in enumerate(ratios):
            weights = (lambda row: shared) if paired else (lambda row, i=i: (plans[i][row].counts(rng, n), plans[i][row].scale))
            out[i, start:start + n] = r._resampled(weights, _seed_draws(rng, r.n_seeds, n))
    return out


def _t(level: float, df: int) -> float:
    """Student's t quantile for a two-sided interval at `level`: 2.23 for df = 10, 3.18 for df = 3."""
    from scipy.special import stdtrit

    return float(stdtrit(df, (1 + level) / 2))


def _interval(point: float, samples: np.ndarray, level: float, df: int) -> tuple[float, float]:
    """point +- t_{df} * the bootstrap standard deviation.

    The spread is estimated from df + 1 independent draws (documents, stream blocks), so it is itself
    uncertain: the t quantile covers that, as the normal one would not with 4 documents (t_3 = 3.18
    against 1.96). Percentile ends cannot reach that far with few documents (a 4-document resample
    takes only 35 distinct values), and covered the truth in 91% of simulated sets instead of 95%.
    """
    half = _t(level, df) * float(np.std(samples))
    return point - half, point + half


def _df(ratios: list[Ratio], paired: bool, samples: np.ndarray | None = None) -> int:
    """Degrees of freedom of the resampled spread.

    Units: independent draws (documents, stream blocks, units) - 1. A seed group's spread over seeds is
    estimated from its k seeds, k - 1 degrees of freedom: 1 for two seeds, where t_1 = 12.7 sd, not 2.
    With seeds, the Welch-Satterthwaite rule combines the parts, each variance V_i with df_i:
    df = (sum V_i)^2 / sum(V_i^2 / df_i), where the seeds' part of a group's mean is var(per seed) / k
    and the units' part is what is left of the bootstrap variance of `samples`.
    """
    rows = [ratios[0].resampling(0)] if paired else [r.resampling(i) for r in ratios for i in range(r.n_seeds)]
    df_units = max(1, min(p.n_draw for p in rows) - 1)
    groups = [r for r in ratios if r.n_seeds > 1]
    if not groups or samples is None:
        return df_units
    total = float(np.var(samples))
    parts = [(float(np.var(r.per_seed(), ddof=1)) / r.n_seeds, r.n_seeds - 1) for r in groups]
    parts.append((max(0.0, total - sum(v for v, _ in parts)), df_units))
    denominator = sum(v * v / d for v, d in parts)
    return max(1, int(total * total / denominator)) if denominator > 0 else df_units


def interval(r: Ratio, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """(point, low, high): percentile bootstrap interval over the units (and over seeds for a group)."""
    point = r.value()
    boot = _bootstrap([r], False, n_boot, seed)[0]
    return (point, *_interval(point, boot, level, _df([r], False, boot)))


@dataclass(frozen=True)
class Comparison:
    diff: float          # a - b on the metric's scale
    low: float           # bootstrap interval of the difference
    high: float
    verdict: str         # "better" | "worse" | "within noise" (a against b)
    paired: bool
    noise: str           # which noise the interval accounts for, in words
    rel: float = 0.0     # a / b - 1, with its interval
    rel_low: float = 0.0
    rel_high: float = 0.0
    sd: float = 0.0      # bootstrap standard deviation of a - b
    sd_log: float = 0.0  # ... and of log(a / b)
    level: float = LEVEL
    df: int = 0          # degrees of freedom of the spread (independent draws - 1)


def noise_covered(a: Ratio, b: Ratio, paired: bool) -> str:
    kind = "eval sample (paired blocks)" if paired else "eval sample (unpaired)"
    seeds = max(a.n_seeds, b.n_seeds)
    return kind + (f" + seeds ({a.n_seeds} vs {b.n_seeds})" if seeds > 1 else "")


def compare(a: Ratio, b: Ratio, higher_is_better: bool, paired: bool, level: float = LEVEL,
            n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Comparison:
    """Is a better or worse than b, beyond the noise the bootstrap can see?

    The interval of (a - b) comes from resampling units (the same units for both runs when paired)
    and, for seed groups, their seeds. It excluding 0 means a real difference at `level`.
    """
    boot = _bootstrap([a, b], paired, n_boot, seed)
    df = _df([a, b], paired, boot[0] - boot[1])
    diff = a.value() - b.value()
    low, high = _interval(diff, boot[0] - boot[1], level, df)
    if low > 0 or high < 0:
        a_higher = low > 0
        verdict = "better" if a_higher == higher_is_better else "worse"
    else:
        verdict = "within noise"
    with np.errstate(divide="ignore", invalid="ignore"):  # a ratio only where both metrics are > 0 (nan else)
        log_ratio = np.log(np.float64(a.value()) / b.value())
        log_boot = np.log(boot[0] / boot[1])
        log_low, log_high = _interval(log_ratio, log_boot, level, df)
        sd_log = float(np.std(log_boot))
    return Comparison(diff, low, high, verdict, paired, noise_covered(a, b, paired), float(np.expm1(log_ratio)),
                      float(np.expm1(log_low)), float(np.expm1(log_high)), float(np.std(boot[0] - boot[1])),
                      sd_log, level, df)


def detectable(sd: float, level: float = LEVEL, power: float = POWER, df: int | None = None) -> float:
    """The smallest true difference a two-sided test at `level` finds with probability `power`, given the
    standard deviation of the estimated difference: (z_0.975 + z_0.80) * sd = 2.80 * sd at the defaults;
    with df, t quantiles instead (the verdicts use them): (2.23 + 0.88) * sd for df = 10."""
    if df is None:
        z = NormalDist().inv_cdf
        return (z((1 + level) / 2) + z(power)) * sd
    from scipy.special import stdtrit

    return (_t(level, df) + float(stdtrit(df, power))) * sd


def same_units(a: dict[str, np.ndarray], b: dict[str, np.ndarray], keys=("n_tokens", "n_bytes")) -> bool:
    """Two runs were scored on the same blocks when every block has the same token and byte counts.

    Same tokenizer + same validation text gives identical columns; another tokenizer cuts the text into
    other tokens, so the bytes per fixed-size block change (and the counts no longer pair up).
    """
    cols = [k for k in keys if k in a and k in b]
    return bool(cols) and all(len(a[k]) == len(b[k]) and np.array_equal(a[k], b[k]) for k in cols)


def seed_groups(configs: dict[str, dict], seed_key: str = "seed") -> list[list[str]]:
    """Names grouped by identical params apart from `seed_key`; groups and members in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name, cfg in configs.items():
        key = repr(sorted((k, repr(v)) for k, v in cfg.items() if k != seed_key))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def differing(configs: dict[str, dict]) -> list[str]:
    """The keys whose values are not the same in every config (a key missing in one counts as differing)."""
    keys = sorted({k for cfg in configs.values() for k in cfg})
    missing = object()
    return [k for k in keys if len({repr(cfg.get(k, missing)) for cfg in configs.values()}) > 1]


def mean_spread(values) -> tuple[float, float]:
    """(mean, sample standard deviation); the spread of a single value is 0."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
