"""Next-token accuracy from per-batch counts (loaded by path with `evaluate.load`)."""

import datasets
import evaluate

_DESCRIPTION = """
Token-level accuracy pooled over the evaluation set: sum(n_correct) / sum(n_tokens). Counts, not
per-batch ratios, are accumulated so that batches are weighted by their number of scored tokens.
"""

_KWARGS_DESCRIPTION = """
Args:
    n_correct (`list` of `int`): tokens of each batch whose argmax prediction equals the label.
    n_tokens (`list` of `int`): scored tokens of each batch.
Returns:
    accuracy (`float`): pooled accuracy in [0, 1].
    n_tokens (`int`): total scored tokens.
Examples:
    >>> acc = evaluate.load("lmtune/eval/metric_modules/token_accuracy")
    >>> acc.compute(n_correct=[3, 1], n_tokens=[4, 6])
    {'accuracy': 0.4, 'n_tokens': 10}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TokenAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"n_correct": datasets.Value("int64"), "n_tokens": datasets.Value("int64")}),
        )

    def _compute(self, n_correct, n_tokens):
        correct, total = int(sum(n_correct)), int(sum(n_tokens))
        if total <= 0:
            raise ValueError("token_accuracy: no scored tokens (every label was -100?)")
        if not 0 <= correct <= total:
            raise ValueError(f"token_accuracy: n_correct={correct} outside [0, n_tokens={total}]")
        return {"accuracy": correct / total, "n_tokens": total}
