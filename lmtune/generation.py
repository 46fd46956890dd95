"""Text generation under the four decoding strategies: greedy, temperature, top-k, top-p."""
import torch

from lmtune.params import GenerateParams


def strategies(gp: GenerateParams) -> dict[str, dict]:
    """Keyword arguments for `model.generate`, one set per strategy, each isolating one knob."""
    return {
        "greedy": {"do_sample": False},
        "temperature": {"do_sample": True, "temperature": gp.temperature, "top_k": 0, "top_p": 1.0},
        "top_k": {"do_sample": True, "top_k": gp.top_k, "top_p": 1.0},
        "top_p": {"do_sample": True, "top_p": gp.top_p, "top_k": 0},
    }


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int, seed: int, **kwargs) -> str:
    """The continuation of `prompt` (prompt excluded); seeded so sampling is reproducible."""
    torch.manual_seed(seed)
    enc = tokenizer(prompt, return_tensors="pt").to(model.device)
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **kwargs
    )
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def samples(model, tokenizer, gp: GenerateParams) -> list[dict]:
    model.eval()
    return [
        {"prompt": prompt, "strategy": name, "settings": kw,
         "text": generate(model, tokenizer, prompt, gp.max_new_tokens, gp.seed, **kw)}
        for prompt in gp.prompts
        for name, kw in strategies(gp).items()
    ]
