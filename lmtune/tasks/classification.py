"""classification: `text` (+ `text_pair`, joined by the eos token, attended) + integer `label`; a
sequence-classification head on the base LM; examples padded/truncated to block_size."""
from typing import Optional

import numpy as np
from pydantic import model_validator

from lmtune.data import text
from lmtune.errors import UserError
from lmtune.params import Strict
from lmtune.tasks.base import Head, Metric, Task


class Settings(Strict):
    """params.yaml `classification:` text (+ optional pair, joined by the eos token) and an integer or
    named label; class i is label_names[i]."""
    text_field: str
    text_pair_field: Optional[str]
    label_field: str
    label_names: list[str]

    @model_validator(mode="after")
    def _names(self):
        if len(self.label_names) < 2:
            raise ValueError("classification.label_names must list at least 2 class names")
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"classification.label_names has duplicates: {self.label_names}")
        return self


def label_id(value, names: list[str]) -> int:
    if isinstance(value, str):
        if value not in names:
            raise UserError(f"classification.label_names: label {value!r} in the data is not one of {names}")
        return names.index(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < len(names):
        raise UserError(f"classification.label_field: label {value!r} is not a class id in [0, {len(names)}) (classification.label_names has {len(names)} names)")
    return int(value)


class Classification(Task):
    name = "classification"
    title = "sequence classifier"
    head = Head("AutoModelForSequenceClassification", "SEQ_CLS", "text-classification", generates=False,
                pad_is_eos=True)
    metrics = (
        Metric("accuracy", "accuracy", ".4f", True, ranks=True, hub=("accuracy", "Accuracy")),
        Metric("macro_f1", "macro-F1", ".4f", True, hub=("f1", "Macro F1"), hub_args=(("average", "macro"),)),
        Metric("n_examples", "examples", "d", None),
    )
    block_columns = (("doc", "pos", "label"), ("pred",))
    Settings = Settings

    @classmethod
    def problems(cls, p) -> list[str]:
        if p.chunk.mode != "pad":
            return ["chunk.mode must be 'pad' when task is 'classification' (one example per row)"]
        return []

    def source_fields(self) -> list[str]:
        fp = self.settings
        return [f for f in (fp.text_field, fp.text_pair_field, fp.label_field) if f]

    def flatten_record(self, record: dict) -> dict:
        fp = self.settings
        pair = text.get_field(record, fp.text_pair_field) if fp.text_pair_field else None
        return {"text": text.get_field(record, fp.text_field) or "", "text_pair": pair,
                "label": label_id(text.get_field(record, fp.label_field), fp.label_names)}

    def keep_flat(self, row: dict) -> bool:
        return bool(row["text"].strip())

    def token_features(self, dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name)),
                                  "label": datasets.Value("int64")})

    def tokenize_batch(self, tokenizer, batch: dict) -> dict:
        """text ids, then for a pair the eos token (id 50256 for GPT-2) and the pair's ids."""
        eos = tokenizer.eos_token_id
        firsts = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        pairs = batch.get("text_pair") or [None] * len(firsts)
        seconds = [tokenizer(p, add_special_tokens=False)["input_ids"] if p is not None else None for p in pairs]
        return {"input_ids": [a + [eos] + b if b is not None else a for a, b in zip(firsts, seconds)],
                "label": batch["label"]}

    def examples(self, ds, pad_id: int, where: str):
        """One example per row, padded/truncated (params require chunk.mode: pad); labels = class ids."""
        from lmtune.data import examples  # the chunk stage's code: flatten and tokenize do not depend on it

        cols, ids_list, dtype = examples.columns(ds)
        block_size = self.p.chunk.block_size
        out = examples.pad_examples(ids_list, block_size, pad_id, dtype=dtype)
        out["labels"] = np.asarray(cols["label"], dtype=np.int64)
        return examples.examples_table(examples.numbered(examples.none_left(out, where, block_size)))

    def model_kwargs(self) -> dict:
        names = self.settings.label_names
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}}

    def evaluate(self, model, blocks, *, tokenizer, autocast=None, desc=None) -> dict:
        """accuracy, macro-F1, per-class reference and prediction counts, confusion matrix (rows = actual),
        and each example's label and prediction ("blocks")."""
        from lmtune.eval import metrics

        names = self.settings.label_names
        r = metrics.evaluate_classifier(model, blocks.rename_column("labels", "label"), self.p.evaluate.batch_size,
                                        len(names), autocast=autocast, desc=desc)
        return {
            "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n_examples": int(sum(r["support"])),
            "support": dict(zip(names, r["support"])),
            "predicted_counts": dict(zip(names, r["predicted_counts"])),
            "confusion_matrix": r["confusion_matrix"], "blocks": r["blocks"],
        }


TASK = Classification
