"""chat: conversations (a list of {role, content} turns: smoltalk, no_robots; ShareGPT's {from, value}
mapped by flatten.role_key/content_key/role_names), rendered with the tokenizer's own chat template; the
loss sees each assistant turn's text and the end-of-turn (eos) token that closes it, nothing of the system
or user turns nor of the template's markup. Examples padded one per row (`chunk.mode: pad`) or packed
whole, several per row, never attending across examples (`concat`, lmtune.data.packing).

The assistant spans come from the template itself: the conversation up to turn i rendered with the
generation prompt is a prefix of the whole rendering, and turn i's content follows it, then eos. So no
`{% generation %}` markers are needed (SmolLM2's template has none), and the eos being the pad token too
(SmolLM2: both `<|im_end|>`) does not matter: the labels come from the spans, never from the pad id.
"""
import numpy as np
import pyarrow as pa

from lmtune.data import packing
from lmtune.errors import UserError
from lmtune.tasks.base import IGNORE_INDEX, examples_table, no_examples, scored_only
from lmtune.tasks.lm import LanguageModelTask

ROLES = ("system", "user", "assistant")
NO_TEMPLATE = ("models/base: the tokenizer has no chat template; task chat renders conversations with the "
               "model's own. Use an instruct model that ships one, or set model.chat_template: chatml to give "
               "this one ChatML (its eos token ends each turn)")


# ---- pure functions ------------------------------------------------------------------------------

def to_messages(turns, role_key: str, content_key: str, role_names: dict[str, str], where: str = "record") -> list[dict]:
    """A record's turns as [{role, content}], roles renamed by `role_names` (ShareGPT human -> user)."""
    if not isinstance(turns, list):
        raise UserError(f"{where}: expected a list of turns, got {type(turns).__name__}")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or role_key not in t or content_key not in t:
            raise UserError(f"{where} turn {i}: expected keys {role_key!r} and {content_key!r} "
                            f"(flatten.role_key, flatten.content_key), got {t!r:.80}")
        role = role_names.get(t[role_key], t[role_key])
        if role not in ROLES:
            raise UserError(f"{where} turn {i}: role {t[role_key]!r} is none of {list(ROLES)}; "
                            "map it with flatten.role_names")
        out.append({"role": role, "content": t[content_key] or ""})
    return out


def _render(tokenizer, messages, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of every assistant turn's content + eos in it."""
    text, eos, spans = _render(tokenizer, messages), tokenizer.eos_token, []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], generation_prompt=True)
        start = len(prefix)
        if not text.startswith(prefix):
            raise UserError(f"chat template: the conversation before assistant turn {i} with the generation prompt "
                            "is not a prefix of the whole conversation; this template cannot mark assistant turns")
        content = next((c for c in (m["content"], m["content"].strip()) if text.startswith(c, start)), None)
        if content is None:
            raise UserError(f"chat template: assistant turn {i}'s text is not rendered right after the generation "
                            "prompt (the template rewrites it)")
        end = start + len(content)
        if not text.startswith(eos, end):
            raise UserError(f"chat template: assistant turn {i} is not closed by the eos token {eos!r}; "
                            "generation would not stop at the end of a reply")
        spans.append((start, end + len(eos)))
    return text, spans


def conversation_ids(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation (tokenized whole, as at inference) and a 0/1 mask: 1 on the
    tokens inside an assistant span (content + eos), 0 on the system/user turns and the template's markup."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a < e and b > s for s, e in spans)) for a, b in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def first_reply_prompts(ids: np.ndarray, labels: np.ndarray, positions: np.ndarray | None) -> list[np.ndarray]:
    """Each example's prompt in a row: its tokens before its first scored one (the conversation up to the
    first assistant reply, generation prompt included). `positions` (packed rows) separate the examples."""
    starts = [0] if positions is None else list(np.flatnonzero(positions == 0))
    out = []
    for a, b in zip(starts, [*starts[1:], len(ids)]):
        scored = np.flatnonzero(labels[a:b] != IGNORE_INDEX)
        if len(scored) and scored[0] > 0:
            out.append(ids[a:a + scored[0]])
    return out


def stop_share(model, prompts: list[np.ndarray], eos_id: int, pad_id: int, max_new_tokens: int, batch_size: int,
               autocast=None) -> float:
    """The share of prompts whose greedy reply emits the end-of-turn (eos) token within max_new_tokens."""
    import contextlib

    import torch

    device, stopped = next(model.parameters()).device, 0
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for r, p in enumerate(chunk):  # left padding: every reply starts at the same column
            ids[r, width - len(p):] = torch.as_tensor(p.astype(np.int64))
            attention[r, width - len(p):] = 1
        with torch.no_grad(), (autocast() if autocast else contextlib.nullcontext()):
            out = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
                                 use_cache=True)
        stopped += int((out[:, width:] == eos_id).any(1).sum())
    return stopped / len(prompts) if prompts else float("nan")


# ---- the task ------------------------------------------------------------------------------------

class Chat(LanguageModelTask):
    name = "chat"
    title = "chat model"
    flat_columns = ("messages",)
    scored = "assistant tokens"

    def source_fields(self, fp) -> list[str]:
        return [fp.messages_field]

    def flatten_record(self, fp, record: dict) -> dict:
        return {"messages": to_messages(record[fp.messages_field], fp.role_key, fp.content_key, dict(fp.role_names),
                                        f"field {fp.messages_field!r}")}

    def keep_flat(self, row: dict) -> bool:
        return any(m["role"] == "assistant" and m["content"].strip() for m in row["messages"])

    def token_features(self, dtype: np.dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name)),
                                  "assistant_mask": datasets.List(datasets.Value("int8"))})

    def tokenize_batch(self, tokenizer, batch: dict, eos_id: int | None) -> dict:
        if not tokenizer.chat_template:
            raise UserError(NO_TEMPLATE)
        pairs = [conversation_ids(tokenizer, m) for m in batch["messages"]]
        return {"input_ids": [p[0] for p in pairs], "assistant_mask": [p[1] for p in pairs]}

    def chunk(self, ds, mode: str, block_size: int, pad_id: int, where: str) -> pa.Table:
        """pad: one conversation per row; concat: conversations packed whole (lmtune.data.packing)."""
        dtype = np.dtype(ds.features["input_ids"].feature.dtype)
        ids = [np.asarray(x, dtype=dtype) for x in ds["input_ids"]]
        labels = [packing.labelled(x, m) for x, m in zip(ids, ds["assistant_mask"])]
        build = packing.pack_labelled if mode == "concat" else packing.pad_labelled
        out = scored_only(build(ids, labels, block_size, pad_id, dtype=dtype))
        if len(out["input_ids"]) == 0:
            raise no_examples(where, block_size)
        return examples_table(out)

    # ---- evaluate -------------------------------------------------------------------------------

    def generation_metrics(self, model, blocks, tokenizer, gp, batch_size: int, autocast=None) -> dict:
        """"stops": the share of validation conversations whose greedy first reply ends with the end-of-turn
        token within generate.max_new_tokens, and "n_prompts"."""
        cols = blocks.with_format("numpy")[:]
        positions = cols.get("position_ids")
        prompts = [p for r in range(len(cols["input_ids"]))
                   for p in first_reply_prompts(cols["input_ids"][r], cols["labels"][r],
                                                None if positions is None else positions[r])]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        share = stop_share(model, prompts, tokenizer.eos_token_id, pad, gp.max_new_tokens, batch_size, autocast)
        return {"stops": share, "n_prompts": len(prompts)}

    def summary(self, name: str, m: dict) -> str:
        return f"{super().summary(name, m)}  stops {m['stops']:.3f} of {m['n_prompts']} prompts"

    def metrics_table(self, ev: dict) -> list[str]:
        return ["| model | loss | perplexity | next-token accuracy | tokens | replies that stop |",
                "|---|---|---|---|---|---|",
                *[f"| {k} | {v['loss']:.4f} | {v['perplexity']:.2f} | {v['accuracy']:.4f} | {v['n_tokens']} | "
                  f"{v['stops']:.3f} of {v['n_prompts']} |" for k, v in ev.items()]]

    def card_metrics(self, m: dict) -> list[dict]:
        return [*super().card_metrics(m),
                {"type": "stop_rate", "name": "Greedy replies ending with the end-of-turn token", "value": round(m["stops"], 4)}]

    # ---- samples --------------------------------------------------------------------------------

    def samples(self, model, tokenizer, gp, fp, placement, strategy: str = "all", raw: bool = False) -> list[dict]:
        """Each prompt sent as one user turn through the chat template (`raw`: as plain text)."""
        from lmtune.eval import generation

        def as_chat(prompt):
            return _render(tokenizer, [{"role": "user", "content": prompt}], generation_prompt=True)

        return generation.samples(model, tokenizer, gp, placement, format_prompt=None if raw else as_chat, only=strategy)

    def shipped_defaults(self, model) -> list[str]:
        return [*super().shipped_defaults(model), "",
                "A chat model takes a list of messages; the pipeline renders them with the tokenizer's chat template:", "",
                "```python", 'messages = [{"role": "user", "content": "Give three tips for staying healthy."}]',
                'print(pipe(messages, max_new_tokens=128, do_sample=False)[0]["generated_text"][-1]["content"])', "```"]

    def card_facts(self, p) -> list[str]:
        template = "ChatML (opted in: model.chat_template)" if p.model.chat_template else "the tokenizer's own"
        return [f"- Chat template: {template}; loss on assistant turns and their end-of-turn token only"]

    def samples_markdown(self, samples: list[dict]) -> list[str]:
        out = super().samples_markdown(samples)
        return [line.replace("Prompt: `", "User message: `", 1) if line.startswith("Prompt: `") else line for line in out]

