"""How compare writes a metric and a param value: one place for the table, the notes and the charts."""
import math

LABELS = {"perplexity": "perplexity", "bits_per_byte": "bits/byte", "accuracy": "accuracy", "macro_f1": "macro-F1"}
# The second number beside the ranking metric: next-token accuracy beside perplexity, macro-F1 beside a
# classifier's accuracy.
EXTRA = {"perplexity": "accuracy", "bits_per_byte": "accuracy", "accuracy": "macro_f1"}


def decimals(x: float, key: str) -> int:
    """4 decimals for shares and bits/byte; perplexity to 4 significant digits (5.432, 26.75, 123.4, 36188)."""
    if key in ("accuracy", "macro_f1", "bits_per_byte"):
        return 4
    return 3 if abs(x) < 10 else 2 if abs(x) < 100 else 1 if abs(x) < 1000 else 0


def fmt_metric(x: float | None, key: str, like: float | None = None) -> str:
    """x to the decimals of `like` (default x itself): a spread or an interval end shown like its value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{decimals(x if like is None else like, key)}f}"


def fmt_param(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def fmt_change(x: float, unit: str) -> str:
    """A change against a reference: +1.2% (perplexity, bits per byte) or +3.4pp (accuracy points)."""
    return f"{x:+.1f}{unit}"
