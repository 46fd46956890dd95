"""Base models: GPT-2 from config with the real BPE, and a local folder. The bundled SmolLM2 GGUF's conversion is
checked on the download stage's output in tests/test_recipe_chat.py (one conversion, ~15 s, for both)."""
import pytest
import torch

from lmtune.models import loading
from lmtune.errors import UserError
from lmtune.params import GPT2Arch, ModelParams

TINY = GPT2Arch(n_layer=2, n_head=2, n_embd=32, n_positions=64)


def test_gpt2_from_config_uses_gpt2_bpe_and_is_seeded():
    m1, tok = loading.gpt2_from_config(TINY, seed=7)
    m2, _ = loading.gpt2_from_config(TINY, seed=7)
    # GPT-2's ids of "Hello" and "Ġworld" (its vocab.json; tests/test_gpt2_bpe.py checks the whole BPE
    # against tiktoken) and of <|endoftext|>, the last of its 50,257 tokens.
    assert tok("Hello world")["input_ids"] == [15496, 995] and tok.eos_token_id == 50256
    assert m1.config.vocab_size == 50257 and m1.config.n_positions == 64
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert loading.context_length(m1.config) == 64


def test_config_file_reads_what_transformers_config_says(tmp_path):
    # chunk reads models/base/config.json as JSON (no torch import): same context length and pad token.
    import subprocess
    import sys

    from transformers import GPT2Config, LlamaConfig

    from lmtune.models import config_file

    for i, c in enumerate([GPT2Config(n_positions=64), GPT2Config(n_positions=128, pad_token_id=7),
                           LlamaConfig(max_position_embeddings=2048, pad_token_id=3)]):
        c.save_pretrained(tmp_path / str(i))
        j = config_file.read(tmp_path / str(i))
        assert (config_file.context_length(j), config_file.pad_token_id(j)) == (loading.context_length(c), c.pad_token_id)
    with pytest.raises(UserError, match="context length of model type 'x'"):
        config_file.context_length({"model_type": "x"})
    with pytest.raises(UserError, match="no config.json"):
        config_file.read(tmp_path)
    code = "import sys, stages.chunk; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # chunk's start-up stays light


def test_local_folder_roundtrip_and_pad_token(tmp_path):
    p = ModelParams(source="gpt2_config", name=None, revision=None, gpt2=TINY, chat_template=None)
    model, tok = loading.load_base(p, seed=0)
    assert tok.pad_token == tok.eos_token and model.config.pad_token_id == 50256
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = loading.load_base(ModelParams(source="local", name=str(tmp_path), revision=None, gpt2=TINY, chat_template=None), seed=1)
    x = torch.tensor([[15496, 995]])
    assert torch.equal(model.eval()(x).logits, again(x).logits)


def test_model_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")  # never loaded: only safetensors are
    with pytest.raises(UserError, match="no \\*.safetensors weights"):
        loading.check_model_dir(tmp_path)
