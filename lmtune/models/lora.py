"""LoRA adapters through peft: the config from params, wrapping a model for training, and loading a tuned
folder that holds either plain weights or an adapter (merged into the base for evaluation and export)."""
from pathlib import Path

from lmtune import paths
from lmtune.errors import UserError
from lmtune.models import loading


def is_adapter(folder) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def lora_config(head, lp, model_type: str = ""):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=getattr(TaskType, head.peft_task_type),
        r=lp.r, lora_alpha=lp.alpha, lora_dropout=lp.dropout,
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
        target_modules=list(lp.target_modules), modules_to_save=list(lp.modules_to_save) or None,
    )


def with_lora(model, head, lp, gradient_checkpointing: bool = False):
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
    return get_peft_model(model, lora_config(head, lp, model.config.model_type))


def load_tuned(folder, base_folder, head, seed: int, **kwargs):
    """The tuned model: plain weights, or the base model + the LoRA adapter saved in `folder` (merged)."""
    if not is_adapter(folder):
        return loading.load_model(folder, head, seed, **kwargs)
    from peft import PeftModel

    base = loading.load_model(base_folder, head, seed, **kwargs)
    return PeftModel.from_pretrained(base, folder).merge_and_unload()


def _in_project(path: str) -> str:
    p = Path(path)
    return p.relative_to(paths.ROOT).as_posix() if p.is_absolute() and p.is_relative_to(paths.ROOT) else path
