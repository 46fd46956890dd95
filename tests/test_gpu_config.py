"""The GPU training config, checked on a CPU machine: what training_arguments asks the Trainer for
when CUDA is (pretend-)available, and that models load with SDPA attention."""
import pytest
import torch
import transformers

from lmtune import params
from lmtune.train import hardware, trainer
from lmtune.errors import UserError


@pytest.mark.parametrize(
    "precision, cuda, bf16_ok, expected",
    [
        ("auto", True, True, {"bf16": True, "fp16": False}),
        ("auto", True, False, {"bf16": False, "fp16": True}),
        ("auto", False, False, {"bf16": False, "fp16": False}),
        ("fp32", True, True, {"bf16": False, "fp16": False}),
        ("bf16", True, True, {"bf16": True, "fp16": False}),
        ("fp16", True, True, {"bf16": False, "fp16": True}),
        ("bf16", False, False, {"bf16": True, "fp16": False}),  # CPU bf16 autocast, when asked for
    ],
)
def test_precision_flags(precision, cuda, bf16_ok, expected):
    assert trainer.precision_flags(precision, cuda, bf16_ok) == expected


def test_fp16_without_cuda_is_a_user_error():
    with pytest.raises(UserError, match="train.precision"):
        trainer.precision_flags("fp16", False, False)


@pytest.fixture
def recorded_args(monkeypatch, tmp_path):
    """training_arguments' kwargs, with CUDA present or not (the TrainingArguments class is stubbed)."""

    def run(cuda: bool, bf16_ok: bool = True, **train_overrides):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
        monkeypatch.setattr(trainer, "cpu_bf16_here", lambda cuda: False)  # a CPU without native bf16 (tests/test_hardware.py)
        monkeypatch.setattr(trainer.transformers, "TrainingArguments", lambda **kw: kw)
        tp = params.load().train.model_copy(update=train_overrides)
        return trainer.training_arguments(tp, 0, tmp_path)

    return run


def test_cuda_gets_fused_adamw_pinned_memory_and_bf16(recorded_args):
    kw = recorded_args(cuda=True, precision="auto", dataloader_workers=4)
    assert kw["optim"] == "adamw_torch_fused"
    assert kw["dataloader_pin_memory"] is True
    assert kw["dataloader_num_workers"] == 4
    assert (kw["bf16"], kw["fp16"]) == (True, False)


def test_older_gpu_gets_fp16(recorded_args):
    kw = recorded_args(cuda=True, bf16_ok=False, precision="auto")
    assert (kw["bf16"], kw["fp16"]) == (False, True)


def test_cpu_without_native_bf16_gets_no_pinning_fp32_and_fused_adamw_where_torch_has_it(recorded_args, monkeypatch):
    kw = recorded_args(cuda=False, precision="auto")
    assert kw["optim"] == "adamw_torch_fused"  # torch >= 2.4 has a fused CPU AdamW
    assert kw["dataloader_pin_memory"] is False
    assert (kw["bf16"], kw["fp16"]) == (False, False)
    monkeypatch.setattr(torch, "__version__", "2.3.1")
    assert trainer.optimizer_name(cuda=False) == "adamw_torch"
    assert trainer.optimizer_name(cuda=True) == "adamw_torch_fused"


@pytest.mark.parametrize("switch", [True, False])
def test_torch_compile_follows_the_params_switch(recorded_args, switch):
    assert recorded_args(cuda=True, torch_compile=switch)["torch_compile"] is switch


def test_default_params_on_this_machine_build_real_training_arguments(tmp_path):
    args = trainer.training_arguments(params.load().train, 0, tmp_path)
    assert isinstance(args, transformers.TrainingArguments)
    if not torch.cuda.is_available():
        native = hardware.cpu_native_bf16(hardware.cpu_flags())  # auto: bf16 autocast on CPUs that have it
        assert (args.bf16, args.fp16, args.optim.value, args.dataloader_pin_memory) == (native, False, "adamw_torch_fused", False)


def _save(config, path):
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(config.vocab_size), eos_token="<eos>").save_pretrained(path)
    return path


def _word_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<eos>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _project_loaders(folder, model_type: str):
    """Every way the stages load a model: the base (loading.load_base on a local folder), each task's model
    class (train, evaluate), and a tuned LoRA model merged back (evaluate, export)."""
    from lmtune import tasks
    from lmtune.models import loading, lora as lora_
    from lmtune.params import ModelParams

    p = params.load()
    yield "load_base", loading.load_base(ModelParams(source="local", name=str(folder), revision=None, gpt2=p.model.gpt2, chat_template=None), 0)[0]
    clf = p.model_copy(update={"classification": {**p.classification, "label_names": ["neg", "pos"]}})
    for name in tasks.NAMES:
        task = tasks.get(name)(clf)
        yield name, loading.load_model(folder, task.head, 0, **task.model_kwargs())
    head = tasks.get("causal_lm").head
    lora = p.lora.model_copy(update={"enabled": True, "target_modules": [{"gpt2": "c_attn", "llama": "q_proj"}[model_type]]})
    lora_.with_lora(loading.load_model(folder, head, 0), head, lora).save_pretrained(folder / "adapter")
    yield "load_tuned (LoRA merged)", lora_.load_tuned(folder / "adapter", folder, head, 0)


@pytest.mark.parametrize(
    "config",
    [
        transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=64),
        transformers.LlamaConfig(num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, hidden_size=16,
                                 intermediate_size=32, vocab_size=64, max_position_embeddings=32),  # SmolLM2's family
    ],
    ids=["gpt2", "llama"],
)
def test_the_project_loaders_give_sdpa_attention(tmp_path, config):
    # The project loads with from_pretrained(folder, use_safetensors=True) and no attn_implementation:
    # transformers picks SDPA for every architecture that supports it (eager otherwise, instead of
    # failing as an explicit attn_implementation="sdpa" would on a hub model without SDPA).
    folder = _save(config, tmp_path / "m")
    seen = {name: model.config._attn_implementation for name, model in _project_loaders(folder, config.model_type)}
    assert seen and set(seen.values()) == {"sdpa"}, seen



def test_checkpointing_flag_uses_the_name_the_installed_transformers_knows():
    """transformers 5.17 (the GPU machine image) has only `gradient_checkpointing`; later 5.x releases
    renamed it `activation_checkpointing` and reject nothing, but warn on the old name."""
    import dataclasses

    old = dataclasses.make_dataclass("OldArgs", [("output_dir", str), ("gradient_checkpointing", bool)])
    assert trainer.checkpointing_flag(True, old) == {"gradient_checkpointing": True}
    new = dataclasses.make_dataclass("NewArgs", [("gradient_checkpointing", bool), ("activation_checkpointing", bool)])
    assert trainer.checkpointing_flag(True, new) == {"activation_checkpointing": True}
    # The installed class accepts what the flag names, and the Trainer sees checkpointing on.
    (name, on), = trainer.checkpointing_flag(True).items()
    assert name in {f.name for f in dataclasses.fields(transformers.TrainingArguments)}


def test_gradient_checkpointing_param_reaches_the_training_arguments(tmp_path):
    tp = params.load().train.model_copy(update={"gradient_checkpointing": True})
    args = trainer.training_arguments(tp, 0, tmp_path)
    (name, _), = trainer.checkpointing_flag(True).items()
    assert getattr(args, name) is True
    off = trainer.training_arguments(tp.model_copy(update={"gradient_checkpointing": False}), 0, tmp_path)
    assert getattr(off, name) is False
