"""Accuracy, macro-F1, class counts and confusion matrix (loaded by path with `evaluate.load`)."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

_DESCRIPTION = """
Single-label classification summary over a fixed label set 0..num_labels-1. The label set is given,
not inferred from the data, so macro-F1 averages over every class even when a class never occurs
in predictions or references (it then scores 0 for that class: zero_division=0).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    num_labels (`int`): number of classes (keyword of `compute`).
Returns:
    accuracy (`float`), macro_f1 (`float`),
    support (`list` of `int`): reference count per class,
    predicted_counts (`list` of `int`): prediction count per class,
    confusion_matrix (`list` of `list` of `int`): rows = reference class, columns = predicted class.
Examples:
    >>> clf = evaluate.load("lmtune/eval/metric_modules/classification")
    >>> clf.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)["accuracy"]
    0.6666666666666666
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        if num_labels is None or int(num_labels) < 1:
            raise ValueError("classification: pass num_labels (>= 1) to compute()")
        preds, refs = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        if refs.size == 0:
            raise ValueError("classification: no examples")
        # sklearn silently drops ids outside `labels` from the confusion matrix; fail loudly instead.
        for name, ids in (("predictions", preds), ("references", refs)):
            if ids.min() < 0 or ids.max() >= num_labels:
                raise ValueError(f"classification: {name} outside [0, {num_labels}): {sorted(set(ids.tolist()))}")
        labels = list(range(int(num_labels)))
        return {
            "accuracy": float((preds == refs).mean()),
            "macro_f1": float(f1_score(refs, preds, labels=labels, average="macro", zero_division=0)),
            "support": np.bincount(refs, minlength=num_labels).tolist(),
            "predicted_counts": np.bincount(preds, minlength=num_labels).tolist(),
            "confusion_matrix": confusion_matrix(refs, preds, labels=labels).tolist(),
        }
