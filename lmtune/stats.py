"""Statistics for comparing runs: bootstrap intervals, paired bootstrap verdicts, seed groups.

Pure functions over numpy arrays (no files, no DVC), so every rule here is unit-tested on its own.

Every metric compare ranks by is a ratio of sums over evaluation units (validation blocks, or examples
for a classifier), seen through a fixed transform:
    perplexity    = exp(sum(nll) / sum(tokens))          per block: summed NLL in nats, scored tokens
    bits per byte = sum(nll / ln 2) / sum(bytes)
    accuracy      = sum(correct) / sum(1)
A `Ratio` holds those per-unit sums for one run, or for k runs that differ only in their seed (rows).

Two kinds of noise:
- evaluation sample: which blocks happened to be in the validation set. Resampling the blocks with
  replacement covers it; comparing two runs on the *same* blocks (paired) cancels the block-to-block
  difficulty both runs share, which is most of the variance.
- training: what the seed changes (init of new weights, data order, dropout). Only several seeds of the
  same config show it; a group's resamples also draw its seeds with replacement.
"""
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000   # resamples: the 2.5% tail is then ~50 draws, enough for stable interval ends
LEVEL = 0.95
BOOT_SEED = 0   # fixed: the same inputs give the same intervals and verdicts, byte for byte
_CHUNK = 250    # resamples built at a time (a [chunk, n_units] weight matrix), to bound memory

TRANSFORMS = {"exp": np.exp, "identity": lambda x: x}


@dataclass(frozen=True, eq=False)
class Ratio:
    """transform(sum(num) / sum(den)) over units, for one run or for k runs that differ only in seed.

    num and den: one 1-D array per seed (a 1-D array is one seed; a 2-D array is [seeds, units]). Seeds
    may have scored different units (the validation sample can depend on the seed), so rows may differ
    in length; only a paired comparison needs them all on the same units.
    """
    num: tuple
    den: tuple
    transform: str = "identity"

    def __post_init__(self):
        num, den = _rows(self.num), _rows(self.den)
        if not num or len(num) != len(den) or any(a.ndim != 1 or a.shape != b.shape or a.size == 0 for a, b in zip(num, den)):
            raise ValueError("num and den must be the same non-empty 1-D arrays, one per seed")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}")
        object.__setattr__(self, "num", tuple(num))
        object.__setattr__(self, "den", tuple(den))

    @classmethod
    def group(cls, members: list["Ratio"]) -> "Ratio":
        """The seed group of several runs (each row of each member becomes one seed)."""
        if len({m.transform for m in members}) != 1:
            raise ValueError("a group's members must share one transform")
        return cls(tuple(r for m in members for r in m.num), tuple(r for m in members for r in m.den), members[0].transform)

    @property
    def n_seeds(self) -> int:
        return len(self.num)

    @property
    def n_units(self) -> int | None:
        """Units per seed, or None when seeds scored different numbers of units."""
        sizes = {r.size for r in self.num}
        return sizes.pop() if len(sizes) == 1 else None

    def per_seed(self) -> np.ndarray:
        """The metric of each seed on all its units."""
        return TRANSFORMS[self.transform](np.array([n.sum() / d.sum() for n, d in zip(self.num, self.den)]))

    def value(self) -> float:
        """The point estimate: the mean over seeds of each seed's metric."""
        return float(self.per_seed().mean())

    def _resampled(self, weights, seed_draws: np.ndarray) -> np.ndarray:
        """Metric per resample. weights(row) -> [B, n_units] multinomial counts; seed_draws: [B, k] seeds."""
        f = TRANSFORMS[self.transform]
        per_seed = []
        for n, d in zip(self.num, self.den):
            w = weights(n.size)
            per_seed.append(f((w @ n) / (w @ d)))  # [B]
        return np.take_along_axis(np.stack(per_seed, 1), seed_draws, axis=1).mean(1)


def _rows(x) -> list[np.ndarray]:
    """One 1-D float array per seed, from a 1-D array (one seed), a 2-D array or a sequence of arrays."""
    if isinstance(x, np.ndarray):
        return [x.astype(float)] if x.ndim == 1 else [np.asarray(r, float) for r in x]
    return [np.asarray(r, float) for r in x]


def _weights(rng: np.random.Generator, n_units: int, n: int) -> np.ndarray:
    """n resamples of n_units units with replacement, as counts per unit (sum(counts * x) = resampled sum)."""
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n).astype(float)


def _seed_draws(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    # One seed has nothing to resample: keep it (draw index 0) without consuming randomness.
    return np.zeros((n, 1), int) if k == 1 else rng.integers(0, k, size=(n, k))


def _bootstrap(ratios: list[Ratio], paired: bool, n_boot: int, seed: int) -> np.ndarray:
    """[len(ratios), n_boot] resampled metrics.

    paired: every seed row of every ratio is on the same units, and each resample draws one set of
    units for all of them; otherwise each row draws its own.
    """
    rng = np.random.default_rng(seed)
    sizes = {r.size for ratio in ratios for r in ratio.num}
    if paired and len(sizes) != 1:
        raise ValueError("paired resampling needs the same units in every run")
    out = np.empty((len(ratios), n_boot))
    for start in range(0, n_boot, _CHUNK):
        n = min(_CHUNK, n_boot - start)
        shared = _weights(rng, next(iter(sizes)), n) if paired else None
        weights = (lambda size: shared) if paired else (lambda size: _weights(rng, size, n))
        for i, r in enumerate(ratios):
            out[i, start:start + n] = r._resampled(weights, _seed_draws(rng, r.n_seeds, n))
    return out


def _tails(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def interval(r: Ratio, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """(point, low, high): percentile bootstrap interval over the units (and over seeds for a group)."""
    return (r.value(), *_tails(_bootstrap([r], False, n_boot, seed)[0], level))


@dataclass(frozen=True)
class Comparison:
    diff: float          # a - b on the metric's scale
    low: float           # bootstrap interval of the difference
    high: float
    verdict: str         # "better" | "worse" | "within noise" (a against b)
    paired: bool
    noise: str           # which noise the interval accounts for, in words


def noise_covered(a: Ratio, b: Ratio, paired: bool) -> str:
    kind = "eval sample (paired blocks)" if paired else "eval sample (unpaired)"
    seeds = max(a.n_seeds, b.n_seeds)
    return kind + (f" + seeds ({a.n_seeds} vs {b.n_seeds})" if seeds > 1 else "")


def compare(a: Ratio, b: Ratio, higher_is_better: bool, paired: bool, level: float = LEVEL,
            n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Comparison:
    """Is a better or worse than b, beyond the noise the bootstrap can see?

    The interval of (a - b) comes from resampling blocks (the same blocks for both runs when paired)
    and, for seed groups, their seeds. It excluding 0 means a real difference at `level`.
    """
    boot = _bootstrap([a, b], paired, n_boot, seed)
    low, high = _tails(boot[0] - boot[1], level)
    if low > 0 or high < 0:
        a_higher = low > 0
        verdict = "better" if a_higher == higher_is_better else "worse"
    else:
        verdict = "within noise"
    return Comparison(a.value() - b.value(), low, high, verdict, paired, noise_covered(a, b, paired))


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
