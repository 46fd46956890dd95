"""Text generation under the four decoding strategies (greedy, temperature, top-k, top-p), and a
classifier's predictions, on the device `lmtune.device` chooses.

Generation always runs with the key/value cache: training saves `use_cache: false` in the config (the
cache is useless under gradient checkpointing), and without it every new token re-runs the whole
prefix, so n new tokens after a p-token prompt cost sum_{i<n} (p + i) token-positions instead of p + n
(32 tokens after a 12-token prompt: 880 against 44, 20x).
"""
import torch

from lmtune.device import Placement
from lmtune.errors import UserError
from lmtune.params import GenerateParams


def strategies(gp: GenerateParams) -> dict[str, dict]:
    """Keyword arguments for `model.generate`, one set per strategy, each isolating one knob."""
    return {
        "greedy": {"do_sample": False},
        "temperature": {"do_sample": True, "temperature": gp.temperature, "top_k": 0, "top_p": 1.0},
        "top_k": {"do_sample": True, "top_k": gp.top_k, "top_p": 1.0},
        "top_p": {"do_sample": True, "top_p": gp.top_p, "top_k": 0},
    }


def place(model, placement: Placement):
    """The model on the placement's device in eval mode, with the inference KV cache switched back on."""
    model.config.use_cache = True
    return model.to(placement.device).eval()


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int, seed: int, placement: Placement, **kwargs) -> str:
    """The continuation of `prompt` (prompt excluded); seeded so sampling is reproducible, and the same
    seed gives the base and the tuned model the same random draws."""
    torch.manual_seed(seed)
    enc = tokenizer(prompt, return_tensors="pt").to(placement.device)
    with placement.autocast():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **kwargs)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def samples(model, tokenizer, gp: GenerateParams, placement: Placement, format_prompt=None,
            only: str = "all") -> list[dict]:
    """Every prompt under every strategy (or only the one named by `only`). `format_prompt` wraps a prompt
    first (an instruction model is prompted with its training template); a wrapped text that differs from
    the prompt is recorded as `input`."""
    model.eval()
    out = []
    for prompt in gp.prompts:
        model_input = format_prompt(prompt) if format_prompt else prompt
        for name, kw in strategies(gp).items():
            if only not in (name, "all"):
                continue
            s = {"prompt": prompt, "strategy": name, "settings": {**kw, "max_new_tokens": gp.max_new_tokens,
                                                                  "seed": gp.seed},
                 "text": generate(model, tokenizer, model_input, gp.max_new_tokens, gp.seed, placement, **kw)}
            if model_input != prompt:
                s["input"] = model_input
            out.append(s)
    return out


@torch.no_grad()
def classify(model, tokenizer, texts: list[str], placement: Placement) -> list[dict]:
    """A classifier's label and class probabilities for each text (export's samples for classification)."""
    model.eval()
    out = []
    for t in texts:
        enc = tokenizer(t, return_tensors="pt").to(placement.device)
        with placement.autocast():
            logits = model(**enc).logits
        probs = logits.float().softmax(-1)[0].tolist()
        names = [model.config.id2label[i] for i in range(len(probs))]
        out.append({"prompt": t, "label": names[max(range(len(probs)), key=probs.__getitem__)],
                    "probabilities": {n: round(p, 6) for n, p in zip(names, probs)}})
    return out


# The keys of a sample that come from the model: generated text, or a classifier's label and probabilities.
OUTPUTS = ("text", "label", "probabilities")


def task_samples(task, model, tokenizer, gp: GenerateParams, placement: Placement, only: str = "all",
                 raw: bool = False) -> list[dict]:
    """Samples for `gp.prompts` as the task's head makes them: generations per decoding strategy, each
    prompt wrapped as the task trained (`task.prompt`, unless `raw`), or a classifier's predictions."""
    if not task.head.generates:
        return classify(model, tokenizer, gp.prompts, placement)
    return samples(model, tokenizer, gp, placement, format_prompt=None if raw else task.prompt, only=only)


def pair(base: list[dict], tuned: list[dict]) -> list[dict]:
    """The tuned samples with the base model's output for the same prompt and settings beside each
    (`base_<key>` for every model output key)."""
    outputs = [k for k in OUTPUTS if tuned and k in tuned[0]]

    def key(s):
        return {k: v for k, v in s.items() if k not in outputs}

    if [key(b) for b in base] != [key(t) for t in tuned]:
        raise UserError("base samples were made for other prompts or settings than the tuned ones "
                        "(generate.*): run `dvc repro` so that both come from the same params")
    return [{**t, **{f"base_{k}": b[k] for k in outputs}} for b, t in zip(base, tuned)]


def export_config(gp: GenerateParams, tokenizer):
    """The generation config an exported language model ships: top-p sampling with the generate settings."""
    from transformers import GenerationConfig

    return GenerationConfig(**strategies(gp)["top_p"], max_new_tokens=gp.max_new_tokens,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
