"""Evaluation per task: language-model numbers, or classifier numbers and a confusion-matrix plot."""
import csv
import io

from lmtune import metrics


def evaluate_model(task: str, model, blocks, batch_size: int, label_names: list[str]) -> dict:
    """causal_lm / instruction: loss, perplexity, next-token accuracy over the scored tokens (labels
    != -100, so an instruction model is scored on its responses only). classification: accuracy,
    macro-F1, per-class reference and prediction counts, confusion matrix (rows = actual)."""
    if task != "classification":
        return metrics.evaluate_causal_lm(model, blocks, batch_size)
    r = metrics.evaluate_classifier(model, blocks.rename_column("labels", "label"), batch_size, len(label_names))
    return {
        "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n_examples": int(sum(r["support"])),
        "support": dict(zip(label_names, r["support"])),
        "predicted_counts": dict(zip(label_names, r["predicted_counts"])),
        "confusion_matrix": r["confusion_matrix"],
    }


def confusion_csv(matrix: list[list[int]], label_names: list[str]) -> str:
    """One `actual,predicted` row per example (DVC's confusion template counts rows)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["actual", "predicted"])
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            w.writerows([[label_names[i], label_names[j]]] * int(count))
    return buf.getvalue()
