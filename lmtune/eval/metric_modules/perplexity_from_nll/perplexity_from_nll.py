"""Perplexity from per-batch summed token NLL (loaded by path with `evaluate.load`)."""

import math

import datasets
import evaluate

_DESCRIPTION = """
Token-weighted mean negative log-likelihood and its perplexity. Each batch contributes its summed
token NLL and its number of scored tokens, so the result is sum(nll) / sum(tokens) over the whole
evaluation set: batches with fewer valid tokens (padding, -100 labels) weigh less, unlike a mean of
per-batch mean losses.
"""

_KWARGS_DESCRIPTION = """
Args:
    nll_sum (`list` of `float`): summed natural-log NLL of the scored tokens of each batch.
    n_tokens (`list` of `int`): number of scored tokens of each batch.
Returns:
    loss (`float`): mean NLL per token (nats).
    perplexity (`float` or `None`): exp(loss); `None` when exp(loss) is not a finite float64.
    n_tokens (`int`): total scored tokens.
Examples:
    >>> ppl = evaluate.load("lmtune/eval/metric_modules/perplexity_from_nll")
    >>> ppl.compute(nll_sum=[2.0, 6.0], n_tokens=[1, 3])
    {'loss': 2.0, 'perplexity': 7.38905609893065, 'n_tokens': 4}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerplexityFromNll(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll_sum": datasets.Value("float64"), "n_tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll_sum, n_tokens):
        total = int(sum(n_tokens))
        if total <= 0:
            raise ValueError("perplexity_from_nll: no scored tokens (every label was -100?)")
        # fsum: exact float64 accumulation, so the order/number of batches does not change the result.
        loss = math.fsum(nll_sum) / total
        # exp overflows float64 for loss > ~709.78 nats (a diverged model). Neither a capped value
        # (looks like a real measurement) nor inf/nan (not valid JSON; metrics files must stay
        # parseable) is honest, so report null; `loss` always carries the exact figure.
        try:
            perplexity = math.exp(loss)
        except OverflowError:
            perplexity = None
        if perplexity is not None and not math.isfinite(perplexity):  # nan loss (nan in logits)
            perplexity = None
        return {"loss": loss, "perplexity": perplexity, "n_tokens": total}
