"""The interface every task implements, and the pieces tasks share (padding, packing, model loading, LoRA).

A task owns what differs between tasks at every stage: which raw fields it reads and the flat columns it
writes (flatten), its token features (tokenize), how token ids become fixed-size examples (chunk), its
model class (train, evaluate, export), its evaluation numbers and primary metric (evaluate, compare), and
how a sample and a metrics table are shown (export, `lmtune.cli.generate`, `lmtune.cli.report`).
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from lmtune.errors import UserError

IGNORE_INDEX = -100


class Task:
    """One task: subclasses set the attributes and implement the methods that raise NotImplementedError."""

    name: str                         # the `task:` value in params.yaml
    title: str                        # "Fine-tuned <title>" heads the model card
    flat_columns: tuple[str, ...]     # the columns flatten writes
    primary_metric: tuple[str, bool]  # (key in metrics/eval.json, higher is better)
    peft_task_type: str               # peft TaskType name for LoRA adapters
    # metrics/blocks*.csv, one row per validation example: columns that are the same for every model
    # (what is scored), and per-model columns (written as base_<name>, tuned_<name>).
    block_columns: tuple[tuple[str, ...], tuple[str, ...]]
    pipeline_tag: str                 # the hub's pipeline tag (model card), also transformers' pipeline() task
    sample_outputs: tuple[str, ...]   # the keys of a sample that come from the model (base_<key> beside them)

    # ---- flatten --------------------------------------------------------------------------------

    def source_fields(self, fp) -> list[str]:
        """The raw columns flatten reads (checked against the data before mapping)."""
        raise NotImplementedError

    def flatten_record(self, fp, record: dict) -> dict:
        """One raw record -> the task's flat columns."""
        raise NotImplementedError

    def keep_flat(self, row: dict) -> bool:
        """drop_empty: whether a flat row has something to learn from."""
        raise NotImplementedError

    def document_text(self, row: dict) -> str | None:
        """A flat row as one text a language model is scored on (lm-evaluation-harness' rolling
        log-likelihood, lmtune.eval.harness); None when the task's model is no language model."""
        return None

    # ---- tokenize -------------------------------------------------------------------------------

    def token_features(self, dtype: np.dtype):
        """The datasets.Features of the tokenized columns (ids stored as `dtype`)."""
        raise NotImplementedError

    def tokenize_batch(self, tokenizer, batch: dict, eos_id: int | None) -> dict:
        """Token ids per example (no special tokens from the tokenizer itself)."""
        raise NotImplementedError

    # ---- chunk ----------------------------------------------------------------------------------

    def chunk(self, ds, mode: str, block_size: int, pad_id: int, where: str) -> pa.Table:
        """Fixed-size examples of one split as an Arrow table; raises UserError (naming `where`) when none."""
        raise NotImplementedError

    # ---- params ---------------------------------------------------------------------------------

    def param_problems(self, p) -> list[str]:
        """Cross-section params checks for this task, each message naming its key."""
        return []

    # ---- model ----------------------------------------------------------------------------------

    def model_class(self):
        raise NotImplementedError

    def model_kwargs(self, label_names: list[str]) -> dict:
        """Extra from_pretrained arguments (a classifier's labels)."""
        return {}

    def load_model(self, folder, seed: int, label_names: list[str]):
        """A model of the task's class from a saved folder (safetensors only), seeded so that any newly
        initialised weights (a classifier's head) are the same in train and in the base evaluation."""
        import torch

        torch.manual_seed(seed)
        return self.model_class().from_pretrained(folder, use_safetensors=True, **self.model_kwargs(label_names))

    def load_tuned(self, folder, base_folder, seed: int, label_names: list[str]):
        """The tuned model: plain weights, or the base model + the LoRA adapter saved in `folder` (merged)."""
        if not is_adapter(folder):
            return self.load_model(folder, seed, label_names)
        from peft import PeftModel

        base = self.load_model(base_folder, seed, label_names)
        return PeftModel.from_pretrained(base, folder).merge_and_unload()

    def lora_config(self, lp, model_type: str = ""):
        from peft import LoraConfig, TaskType

        return LoraConfig(
            task_type=getattr(TaskType, self.peft_task_type),
            r=lp.r, lora_alpha=lp.alpha, lora_dropout=lp.dropout,
            fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
            target_modules=list(lp.target_modules), modules_to_save=list(lp.modules_to_save) or None,
        )

    def with_lora(self, model, lp, gradient_checkpointing: bool = False):
        """Wrap `model` in LoRA adapters (peft) when lora.enabled; only adapters + modules_to_save train."""
        if not lp.enabled:
            return model
        from peft import get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [m for m in lp.target_modules if m.rsplit(".", 1)[-1] not in names]
        if missing:
            raise UserError(f"lora.target_modules: {missing} not found in the model ({model.config.model_type})")
        if gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need grads
        # peft writes the base model's path into adapter_config.json and the adapter's card: record it
        # relative to the project (`models/base`), so a clone elsewhere reproduces models/final byte for byte.
        model.name_or_path = _in_project(model.name_or_path)
        return get_peft_model(model, self.lora_config(lp, model.config.model_type))

    # ---- evaluate -------------------------------------------------------------------------------

    def evaluate(self, model, blocks, batch_size: int, label_names: list[str], *, tokenizer=None, autocast=None,
                 desc: str | None = None) -> dict:
        """The task's evaluation numbers for one model over the validation examples, with "blocks": the
        per-example columns of `block_columns` (forward passes under `autocast()` when given)."""
        raise NotImplementedError

    def plot_csv(self, tuned: dict, label_names: list[str]) -> str:
        """metrics/confusion.csv (a DVC plot): header only unless the task has a confusion matrix."""
        return "actual,predicted\n"

    def summary(self, name: str, m: dict) -> str:
        """One printed line of a model's evaluation numbers (`evaluate`, `lmtune.cli.report`)."""
        raise NotImplementedError

    def metrics_table(self, ev: dict) -> list[str]:
        """Markdown rows of metrics/eval.json for the model card."""
        raise NotImplementedError

    def card_metrics(self, m: dict) -> list[dict]:
        """One model's numbers for the card's model-index: dicts of `type` (the hub's metric id), `name`,
        `value` and optional `args`, as huggingface_hub's EvalResult takes them."""
        raise NotImplementedError

    # ---- samples (export, lmtune.cli.generate) ------------------------------------------------------

    def card_facts(self, p) -> list[str]:
        """Task-specific bullet lines for the model card."""
        return []

    def prepare_export(self, model, tokenizer, gp) -> None:
        """Settings saved with the exported model (a language model's generation config)."""

    def shipped_defaults(self, model) -> list[str]:
        """Model card lines stating the inference defaults the export ships (e.g. its generation config)."""
        return []

    def samples(self, model, tokenizer, gp, fp, placement, strategy: str = "all", raw: bool = False) -> list[dict]:
        """Samples for `gp.prompts` on `placement` (lmtune.device): generations per decoding strategy, or a
        classifier's predictions."""
        raise NotImplementedError

    def pair_samples(self, base: list[dict], tuned: list[dict]) -> list[dict]:
        """The tuned samples with the base model's output for the same prompt and settings beside each
        (`base_<key>` for every key in `sample_outputs`)."""
        def key(s):
            return {k: v for k, v in s.items() if k not in self.sample_outputs}

        if [key(b) for b in base] != [key(t) for t in tuned]:
            raise UserError("base samples were made for other prompts or settings than the tuned ones "
                            "(generate.*): run `dvc repro` so that both come from the same params")
        return [{**t, **{f"base_{k}": b[k] for k in self.sample_outputs}} for b, t in zip(base, tuned)]

    def samples_markdown(self, samples: list[dict]) -> list[str]:
        """Paired samples (pair_samples) as markdown, base beside tuned (model card)."""
        raise NotImplementedError

    def show_sample(self, s: dict) -> str:
        """A sample as `lmtune.cli.generate` prints it."""
        raise NotImplementedError


# ---- shared pieces ------------------------------------------------------------------------------

def pad_examples(ids_list, block_size: int, pad_id: int, prompt_lengths=None, dtype=np.uint16) -> dict:
    """Pad/truncate each example to block_size: attention_mask 1 on tokens; labels -100 on padding
    and on the first prompt_length tokens (the prompt)."""
    n = len(ids_list)
    input_ids = np.full((n, block_size), pad_id, dtype=dtype)
    attention = np.zeros((n, block_size), dtype=np.int8)
    labels = np.full((n, block_size), IGNORE_INDEX, dtype=np.int32)
    for i, ids in enumerate(ids_list):
        ids = np.asarray(ids)[:block_size]
        k = len(ids)
        input_ids[i, :k] = ids
        attention[i, :k] = 1
        labels[i, :k] = ids
        if prompt_lengths is not None:
            labels[i, : min(int(prompt_lengths[i]), k)] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def pack_examples(ids_list, prompt_lengths, block_size: int, dtype=np.uint16) -> dict:
    """Pack examples back to back into full blocks (remainder dropped); prompt labels stay -100."""
    ids = np.concatenate([np.asarray(x) for x in ids_list]).astype(dtype) if ids_list else np.zeros(0, dtype)
    scored = np.concatenate([np.arange(len(x)) >= int(p) for x, p in zip(ids_list, prompt_lengths)]) if ids_list else np.zeros(0, bool)
    n = len(ids) // block_size
    ids, scored = ids[: n * block_size].reshape(n, block_size), scored[: n * block_size].reshape(n, block_size)
    labels = np.where(scored, ids.astype(np.int32), IGNORE_INDEX).astype(np.int32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids, dtype=np.int8), "labels": labels}


def _fixed(arr: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(-1)), arr.shape[1])


def examples_table(cols: dict) -> pa.Table:
    """2-D arrays -> fixed-size-list columns; 1-D arrays (class labels) -> scalar columns."""
    return pa.table({k: _fixed(v) if v.ndim == 2 else pa.array(v) for k, v in cols.items()})


def columns(ds) -> tuple[dict, list, np.dtype]:
    """A tokenized split as python lists per column, its input_ids, and the ids' storage dtype."""
    cols = {c: list(ds[c]) for c in ds.column_names}
    return cols, cols["input_ids"], np.dtype(ds.features["input_ids"].feature.dtype)


def scored_only(out: dict) -> dict:
    """Drop examples that end up with no scored token (an instruction whose response was truncated away,
    a one-token text); position 0 is never a target."""
    keep = (out["labels"][:, 1:] != IGNORE_INDEX).any(axis=1)
    return {k: v[keep] for k, v in out.items()}


def no_examples(where: str, block_size: int) -> UserError:
    return UserError(f"{where}: no example left with a token to learn within chunk.block_size={block_size}")


def _in_project(path: str) -> str:
    from lmtune import paths

    p = Path(path)
    return p.relative_to(paths.ROOT).as_posix() if p.is_absolute() and p.is_relative_to(paths.ROOT) else path


def md_cell(text: str) -> str:
    """Text as one markdown table cell: pipes and HTML escaped, line breaks kept as <br>."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("\r", "").replace("\n", "<br>") or " "


def is_adapter(folder) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def fingerprint_extra(p) -> str:
    """What else a training checkpoint depends on besides train params and data: task, labels, LoRA."""
    extra = {"task": p.task, "label_names": p.flatten.label_names, "lora": p.lora.model_dump()}
    return hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()
