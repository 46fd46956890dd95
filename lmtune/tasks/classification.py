"""classification: `text` (+ `text_pair`, joined by the eos token, attended) + integer `label`; a
sequence-classification head on the base LM; examples padded/truncated to block_size."""
import csv
import io

import numpy as np
import pyarrow as pa

from lmtune.data import text
from lmtune.errors import UserError
from lmtune.tasks.base import Task, columns, examples_table, md_cell, no_examples, pad_examples


def label_id(value, names: list[str]) -> int:
    if isinstance(value, str):
        if value not in names:
            raise UserError(f"flatten.label_names: label {value!r} in the data is not one of {names}")
        return names.index(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < len(names):
        raise UserError(f"flatten.label_field: label {value!r} is not a class id in [0, {len(names)}) (flatten.label_names has {len(names)} names)")
    return int(value)


def confusion_csv(matrix: list[list[int]], label_names: list[str]) -> str:
    """One `actual,predicted` row per example (DVC's confusion template counts rows)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["actual", "predicted"])
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            w.writerows([[label_names[i], label_names[j]]] * int(count))
    return buf.getvalue()


class Classification(Task):
    name = "classification"
    title = "sequence classifier"
    flat_columns = ("text", "text_pair", "label")
    primary_metric = ("accuracy", True)
    peft_task_type = "SEQ_CLS"
    block_columns = (("label",), ("pred",))
    pipeline_tag = "text-classification"
    sample_outputs = ("label", "probabilities")

    def source_fields(self, fp) -> list[str]:
        return [f for f in (fp.text_field, fp.text_pair_field, fp.label_field) if f]

    def flatten_record(self, fp, record: dict) -> dict:
        pair = text.get_field(record, fp.text_pair_field) if fp.text_pair_field else None
        return {"text": text.get_field(record, fp.text_field) or "", "text_pair": pair,
                "label": label_id(text.get_field(record, fp.label_field), fp.label_names)}

    def keep_flat(self, row: dict) -> bool:
        return bool(row["text"].strip())

    def token_features(self, dtype: np.dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name)),
                                  "label": datasets.Value("int64")})

    def tokenize_batch(self, tokenizer, batch: dict, eos_id: int | None) -> dict:
        """text ids, then for a pair the eos token (id 50256 for GPT-2) and the pair's ids."""
        eos = tokenizer.eos_token_id
        firsts = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        pairs = batch.get("text_pair") or [None] * len(firsts)
        seconds = [tokenizer(p, add_special_tokens=False)["input_ids"] if p is not None else None for p in pairs]
        return {"input_ids": [a + [eos] + b if b is not None else a for a, b in zip(firsts, seconds)],
                "label": batch["label"]}

    def chunk(self, ds, mode: str, block_size: int, pad_id: int, where: str) -> pa.Table:
        """One example per row, padded/truncated (params require chunk.mode: pad); labels = class ids."""
        cols, ids_list, dtype = columns(ds)
        out = pad_examples(ids_list, block_size, pad_id, dtype=dtype)
        out["labels"] = np.asarray(cols["label"], dtype=np.int64)
        if len(out["input_ids"]) == 0:
            raise no_examples(where, block_size)
        return examples_table(out)

    def param_problems(self, p) -> list[str]:
        problems = []
        if len(p.flatten.label_names) < 2:
            problems.append("flatten.label_names must list at least 2 class names when task is 'classification'")
        if p.chunk.mode != "pad":
            problems.append("chunk.mode must be 'pad' when task is 'classification' (one example per row)")
        return problems

    # ---- model ----------------------------------------------------------------------------------

    def model_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def model_kwargs(self, label_names: list[str]) -> dict:
        return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                "label2id": {n: i for i, n in enumerate(label_names)}}

    def load_model(self, folder, seed: int, label_names: list[str]):
        """The head is new when `folder` is the base LM: it is initialised under `seed`, so the base
        evaluation (untrained head, the honest baseline) and training start from the same head."""
        model = super().load_model(folder, seed, label_names)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = model.config.eos_token_id  # pad token = eos (GPT-2 has none)
        return model

    # ---- evaluate -------------------------------------------------------------------------------

    def evaluate(self, model, blocks, batch_size: int, label_names: list[str], *, tokenizer=None, autocast=None,
                 desc: str | None = None) -> dict:
        """accuracy, macro-F1, per-class reference and prediction counts, confusion matrix (rows = actual),
        and each example's label and prediction ("blocks")."""
        from lmtune.eval import metrics

        r = metrics.evaluate_classifier(model, blocks.rename_column("labels", "label"), batch_size, len(label_names),
                                        autocast=autocast, desc=desc)
        return {
            "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n_examples": int(sum(r["support"])),
            "support": dict(zip(label_names, r["support"])),
            "predicted_counts": dict(zip(label_names, r["predicted_counts"])),
            "confusion_matrix": r["confusion_matrix"], "blocks": r["blocks"],
        }

    def plot_csv(self, tuned: dict, label_names: list[str]) -> str:
        return confusion_csv(tuned["confusion_matrix"], label_names)

    def summary(self, name: str, m: dict) -> str:
        return f"{name:5s} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({m['n_examples']} examples)"

    def metrics_table(self, ev: dict) -> list[str]:
        return ["| model | accuracy | macro-F1 | examples |", "|---|---|---|---|",
                *[f"| {k} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} | {v['n_examples']} |" for k, v in ev.items()]]

    def card_metrics(self, m: dict) -> list[dict]:
        return [{"type": "accuracy", "name": "Accuracy", "value": round(m["accuracy"], 4)},
                {"type": "f1", "name": "Macro F1", "value": round(m["macro_f1"], 4), "args": {"average": "macro"}}]

    # ---- samples --------------------------------------------------------------------------------

    def card_facts(self, p) -> list[str]:
        return [f"- Labels: {', '.join(p.flatten.label_names)}"]

    def samples(self, model, tokenizer, gp, fp, placement, strategy: str = "all", raw: bool = False) -> list[dict]:
        """The predicted label and class probabilities of each `generate.prompts` text."""
        from lmtune.eval import generation

        return generation.classify(model, tokenizer, gp.prompts, placement)

    def samples_markdown(self, samples: list[dict]) -> list[str]:
        """One row per text: the base model's label (its untrained, seeded head) beside the tuned one."""
        def shown(label, probs):
            return f"**{label}** ({probs[label]:.3f})"

        return ["| text | base | tuned |", "|---|---|---|",
                *[f"| {md_cell(s['prompt'])} | {shown(s['base_label'], s['base_probabilities'])} | "
                  f"{shown(s['label'], s['probabilities'])} |" for s in samples], ""]

    def show_sample(self, s: dict) -> str:
        return f"[{s['label']}] {s['prompt']}  {s['probabilities']}"
