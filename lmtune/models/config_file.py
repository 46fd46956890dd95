"""A saved model folder's config.json read as plain JSON, for stages that need its shape but never load the
model (chunk): importing transformers' AutoConfig pulls in torch, ~4 s of every such stage's start."""
import json
from pathlib import Path

from lmtune.errors import UserError


def read(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: no config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def context_length(config: dict) -> int:
    """The longest sequence the model can attend over (GPT-2: n_positions; Llama: max_position_embeddings)."""
    for key in ("n_positions", "max_position_embeddings"):
        if config.get(key):
            return int(config[key])
    raise UserError(f"cannot tell the context length of model type {config.get('model_type')!r}")


def pad_token_id(config: dict) -> int | None:
    """The config's pad token (None when it has none: save_pretrained leaves out a None default)."""
    return config.get("pad_token_id")
