"""Pure text functions: flatten a record to one text, tokenize a batch."""
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmtune.errors import UserError


def get_field(record: dict, dotted: str) -> Any:
    """`answers.text` -> record["answers"]["text"]; a list of dicts maps the rest of the path over it."""
    value: Any = record
    for i, key in enumerate(dotted.split(".")):
        if isinstance(value, list):
            return [get_field(v, ".".join(dotted.split(".")[i:])) for v in value]
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError(dotted)
        value = value[key]
    return value


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def flatten_record(record: dict, fields: list[str], joiner: str) -> str:
    """Join the strings under `fields` (nested lists flattened in order) into one text.

    Text is kept as is, line breaks included (WikiText's lines end in "\\n" and keep it).
    """
    return joiner.join(s for f in fields for s in _strings(get_field(record, f)))


def check_columns(column_names: list[str], fields: list[str], where: str) -> None:
    missing = sorted({f.split(".")[0] for f in fields} - set(column_names))
    if missing:
        raise UserError(f"{where}: missing column(s) {missing}; columns are {sorted(column_names)}")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids < 65,536 (GPT-2's 50,257 and SmolLM2's 49,152 fit): half of uint32's bytes."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenize_texts(tokenizer, texts: list[str], eos_id: int | None) -> list[np.ndarray]:
    """Token ids per text (no special tokens added by the tokenizer), eos appended when given."""
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    if eos_id is None:
        return [np.asarray(x) for x in ids]
    return [np.asarray(x + [eos_id]) for x in ids]
