"""What differs between the three tasks, as small functions the stages call.

- causal_lm: one `text` per record; concatenate-and-chunk (lmtune.chunking) or pad/truncate per example.
- instruction: `prompt` + `response` per record; the loss sees only the response and its eos
  (prompt and padding labels are -100); examples are padded/truncated (`pad`) or packed (`concat`).
- classification: `text` (+ `text_pair`, joined by the eos token, attended) + integer `label`;
  a sequence-classification head on the base LM; examples padded/truncated to block_size.
"""
import hashlib
import json

import datasets
import numpy as np
import pyarrow as pa

from lmtune import text
from lmtune.errors import UserError

IGNORE_INDEX = -100


# ---- flatten ------------------------------------------------------------------------------------

def flat_columns(task: str) -> list[str]:
    return {"causal_lm": ["text"], "instruction": ["prompt", "response"], "classification": ["text", "text_pair", "label"]}[task]


def source_fields(task: str, fp) -> list[str]:
    """The raw columns a task's flatten reads (checked against the data before mapping)."""
    if task == "causal_lm":
        return list(fp.text_fields)
    if task == "instruction":
        return [f for f in (fp.instruction_field, fp.context_field, fp.response_field) if f]
    return [f for f in (fp.text_field, fp.text_pair_field, fp.label_field) if f]


def instruction_prompt(fp, instruction: str, context: str | None = None) -> str:
    """`### Instruction:` block, `### Context:` block only when there is a context, `### Response:` header."""
    prompt = fp.instruction_template.format(instruction=instruction.strip())
    if context and context.strip():
        prompt += fp.context_template.format(context=context.strip())
    return prompt + fp.response_template


def _label_id(value, names: list[str]) -> int:
    if isinstance(value, str):
        if value not in names:
            raise UserError(f"flatten.label_names: label {value!r} in the data is not one of {names}")
        return names.index(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < len(names):
        raise UserError(f"flatten.label_field: label {value!r} is not a class id in [0, {len(names)}) (flatten.label_names has {len(names)} names)")
    return int(value)


def flatten_record(task: str, fp, record: dict) -> dict:
    """One raw record -> the task's flat columns."""
    if task == "causal_lm":
        return {"text": text.flatten_record(record, fp.text_fields, fp.joiner)}
    if task == "instruction":
        context = record.get(fp.context_field) if fp.context_field else None
        response = text.get_field(record, fp.response_field)
        return {"prompt": instruction_prompt(fp, text.get_field(record, fp.instruction_field) or "", context),
                "response": (response or "").strip()}
    pair = text.get_field(record, fp.text_pair_field) if fp.text_pair_field else None
    return {"text": text.get_field(record, fp.text_field) or "", "text_pair": pair,
            "label": _label_id(text.get_field(record, fp.label_field), fp.label_names)}


def keep_flat(task: str, row: dict) -> bool:
    """drop_empty: a record without usable text (causal LM), response, or text (classification)."""
    if task == "causal_lm":
        return bool(row["text"].strip())
    if task == "instruction":
        return bool(row["response"].strip())
    return bool(row["text"].strip())


# ---- tokenize -----------------------------------------------------------------------------------

def token_features(task: str, dtype: np.dtype) -> datasets.Features:
    ids = datasets.List(datasets.Value(dtype.name))
    if task == "instruction":
        return datasets.Features({"input_ids": ids, "prompt_length": datasets.Value("int32")})
    if task == "classification":
        return datasets.Features({"input_ids": ids, "label": datasets.Value("int64")})
    return datasets.Features({"input_ids": ids})


def tokenize_batch(task: str, tokenizer, batch: dict, eos_id: int | None) -> dict:
    """Token ids per example (no special tokens from the tokenizer itself).

    instruction: prompt ids + response ids + eos, and the prompt's length (its labels become -100).
    classification: text ids, then for a pair the eos token (id 50256 for GPT-2) and the pair's ids.
    """
    eos = tokenizer.eos_token_id
    if task == "causal_lm":
        return {"input_ids": text.tokenize_texts(tokenizer, batch["text"], eos_id)}
    if task == "instruction":
        prompts = tokenizer(batch["prompt"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        responses = tokenizer(batch["response"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {"input_ids": [p + r + [eos] for p, r in zip(prompts, responses)],
                "prompt_length": [len(p) for p in prompts]}
    firsts = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
    pairs = batch.get("text_pair") or [None] * len(firsts)
    seconds = [tokenizer(p, add_special_tokens=False)["input_ids"] if p is not None else None for p in pairs]
    return {"input_ids": [a + [eos] + b if b is not None else a for a, b in zip(firsts, seconds)],
            "label": batch["label"]}


# ---- chunk --------------------------------------------------------------------------------------

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


def build_chunks(task: str, ds: datasets.Dataset, mode: str, block_size: int, pad_id: int) -> dict:
    """Fixed-size training examples (as numpy columns) for a task whose chunks are not plain concat LM.

    Examples that end up with no scored token (an instruction whose response was truncated away,
    a one-token text) are dropped.
    """
    cols = {c: list(ds[c]) for c in ds.column_names}
    ids_list = cols["input_ids"]
    dtype = np.dtype(ds.features["input_ids"].feature.dtype)
    if task == "classification":
        out = pad_examples(ids_list, block_size, pad_id, dtype=dtype)
        out["labels"] = np.asarray(cols["label"], dtype=np.int64)
        return out
    prompts = cols.get("prompt_length")
    if mode == "concat":  # instruction packing (causal_lm concat goes through lmtune.chunking)
        out = pack_examples(ids_list, prompts, block_size, dtype=dtype)
    else:
        out = pad_examples(ids_list, block_size, pad_id, prompts, dtype=dtype)
    keep = (out["labels"][:, 1:] != IGNORE_INDEX).any(axis=1)  # position 0 is never a target
    return {k: v[keep] for k, v in out.items()}


# ---- models -------------------------------------------------------------------------------------

def model_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM


def load_model(task: str, folder, seed: int, label_names: list[str]):
    """A model of the task's class from a saved folder (safetensors only).

    For classification the head is new when `folder` is the base LM: it is initialised under `seed`,
    so the base evaluation (untrained head, the honest baseline) and training start from the same head.
    """
    kwargs = {}
    if task == "classification":
        kwargs = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                  "label2id": {n: i for i, n in enumerate(label_names)}}
    import torch

    torch.manual_seed(seed)
    model = model_class(task).from_pretrained(folder, use_safetensors=True, **kwargs)
    if task == "classification" and model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id  # pad token = eos (GPT-2 has none)
    return model


def lora_config(task: str, lp, model_type: str = ""):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
        r=lp.r, lora_alpha=lp.alpha, lora_dropout=lp.dropout,
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
        target_modules=list(lp.target_modules), modules_to_save=list(lp.modules_to_save) or None,
    )


def with_lora(model, task: str, lp, gradient_checkpointing: bool = False):
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
    return get_peft_model(model, lora_config(task, lp, model.config.model_type))


def is_adapter(folder) -> bool:
    from pathlib import Path

    return (Path(folder) / "adapter_config.json").is_file()


def load_tuned(task: str, folder, base_folder, seed: int, label_names: list[str]):
    """The tuned model: plain weights, or the base model + the LoRA adapter saved in `folder` (merged)."""
    if not is_adapter(folder):
        return load_model(task, folder, seed, label_names)
    from peft import PeftModel

    base = load_model(task, base_folder, seed, label_names)
    return PeftModel.from_pretrained(base, folder).merge_and_unload()


def fingerprint_extra(p) -> str:
    """What else a training checkpoint depends on besides train params and data: task, labels, LoRA."""
    extra = {"task": p.task, "label_names": p.flatten.label_names, "lora": p.lora.model_dump()}
    return hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()

