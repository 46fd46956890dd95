"""chat: conversations (a list of {role, content} turns: smoltalk, no_robots; ShareGPT's {from, value}
mapped by chat.role_key/content_key/role_names), rendered with the tokenizer's own chat template; the
loss sees each assistant turn's text and the end-of-turn (eos) token that closes it, nothing of the system
or user turns nor of the template's markup. Examples padded one per row (`chunk.mode: pad`) or packed
whole, several per row, never attending across examples (`pack`, lmtune.data.packing); `concat` (cutting
the concatenation across conversations) is refused, naming `pack`.

The assistant spans come from the template itself: the conversation up to turn i rendered with the
generation prompt is a prefix of the whole rendering, and turn i's content follows it, then eos. So no
`{% generation %}` markers are needed (SmolLM2's template has none), and the eos being the pad token too
(SmolLM2: both `<|im_end|>`) does not matter: the labels come from the spans, never from the pad id.
"""
import numpy as np

from lmtune.errors import UserError
from lmtune.params import Strict
from lmtune.tasks.base import Head, Metric, Task, token_metrics

IGNORE_INDEX = -100  # as lmtune.data.examples (not imported here: only the chunk stage loads that module)

ROLES = ("system", "user", "assistant")
NO_TEMPLATE = ("models/base: the tokenizer has no chat template; task chat renders conversations with the "
               "model's own. Use an instruct model that ships one, or set model.chat_template: chatml to give "
               "this one ChatML (its eos token ends each turn)")


class Settings(Strict):
    """params.yaml `chat:` the record's list of turns, each turn's role and text keys, and role renames onto
    system/user/assistant (ShareGPT: conversations of {from, value}, human -> user, gpt -> assistant)."""
    messages_field: str
    role_key: str
    content_key: str
    role_names: dict[str, str]


# ---- pure functions ------------------------------------------------------------------------------

def to_messages(turns, role_key: str, content_key: str, role_names: dict[str, str], where: str = "record") -> list[dict]:
    """A record's turns as [{role, content}], roles renamed by `role_names` (ShareGPT human -> user)."""
    if not isinstance(turns, list):
        raise UserError(f"{where}: expected a list of turns, got {type(turns).__name__}")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or role_key not in t or content_key not in t:
            raise UserError(f"{where} turn {i}: expected keys {role_key!r} and {content_key!r} "
                            f"(chat.role_key, chat.content_key), got {t!r:.80}")
        role = role_names.get(t[role_key], t[role_key])
        if role not in ROLES:
            raise UserError(f"{where} turn {i}: role {t[role_key]!r} is none of {list(ROLES)}; "
                            "map it with chat.role_names")
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

class Chat(Task):
    name = "chat"
    title = "chat model"
    # A causal LM whose pipeline takes a list of messages (rendered with the exported tokenizer's template).
    head = Head("AutoModelForCausalLM", "CAUSAL_LM", "text-generation", generates=True, messages=True)
    metrics = (
        *token_metrics("assistant"),
        Metric("stops", "replies that stop", ".3f", True,
               hub=("stop_rate", "Greedy first replies ending with the end-of-turn token")),
        Metric("n_tokens", "tokens", "d", None),
        Metric("n_prompts", "prompts", "d", None),
    )
    block_columns = (("doc", "pos", "n_tokens", "n_bytes"), ("nll",))
    Settings = Settings

    @classmethod
    def problems(cls, p) -> list[str]:
        if p.chunk.mode == "concat":
            return ["chunk.mode must be 'pack' or 'pad' when task is 'chat' ('pack' puts whole conversations "
                    "several per row, each attending only to itself: 'concat' would cut the concatenation across "
                    "conversations)"]
        return []

    def source_fields(self) -> list[str]:
        return [self.settings.messages_field]

    def flatten_record(self, record: dict) -> dict:
        fp = self.settings
        return {"messages": to_messages(record[fp.messages_field], fp.role_key, fp.content_key, dict(fp.role_names),
                                        f"field {fp.messages_field!r}")}

    def keep_flat(self, row: dict) -> bool:
        return any(m["role"] == "assistant" and m["content"].strip() for m in row["messages"])

    def token_features(self, dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name)),
                                  "assistant_mask": datasets.List(datasets.Value("int8"))})

    def tokenize_batch(self, tokenizer, batch: dict) -> dict:
        if not tokenizer.chat_template:
            raise UserError(NO_TEMPLATE)
        pairs = [conversation_ids(tokenizer, m) for m in batch["messages"]]
        return {"input_ids": [p[0] for p in pairs], "assistant_mask": [p[1] for p in pairs]}

    def examples(self, ds, pad_id: int, where: str):
        """pack: conversations packed whole, several per row, none attending to another; pad: one per row.
        Labels are the assistant tokens (content + eos); rows left with no scored token are dropped."""
        from lmtune.data import examples, packing  # the chunk stage's code

        dtype, block_size = np.dtype(ds.features["input_ids"].feature.dtype), self.p.chunk.block_size
        ids = [np.asarray(x, dtype=dtype) for x in ds["input_ids"]]
        labels = [packing.labelled(x, m) for x, m in zip(ids, ds["assistant_mask"])]
        build = packing.pack_labelled if self.p.chunk.mode == "pack" else packing.pad_labelled
        out = build(ids, labels, block_size, pad_id, dtype=dtype)
        out = examples.none_left(examples.scored_only(out), where, block_size)
        return examples.examples_table(examples.numbered(out))

    def prompt(self, text: str) -> str:
        """A user's prompt as one user turn, through the base model's chat template, ready for the reply."""
        return _render(_base_tokenizer(), [{"role": "user", "content": text}], generation_prompt=True)

    def evaluate(self, model, blocks, *, tokenizer, autocast=None, desc=None) -> dict:
        """Loss, perplexity and next-token accuracy over the assistant tokens, and "stops": the share of
        validation conversations whose greedy first reply emits the end-of-turn token within
        generate.max_new_tokens ("n_prompts" of them)."""
        from lmtune.eval import metrics

        batch_size = self.p.evaluate.batch_size
        m = metrics.evaluate_language_model(model, blocks, batch_size, tokenizer=tokenizer, autocast=autocast, desc=desc)
        cols = blocks.with_format("numpy")[:]
        positions = cols.get("position_ids")
        prompts = [q for r in range(len(cols["input_ids"]))
                   for q in first_reply_prompts(cols["input_ids"][r], cols["labels"][r],
                                                None if positions is None else positions[r])]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        m["stops"] = stop_share(model, prompts, tokenizer.eos_token_id, pad, self.p.generate.max_new_tokens,
                                batch_size, autocast)
        m["n_prompts"] = len(prompts)
        return m


def _base_tokenizer():
    """models/base's tokenizer (its chat template), loaded once per process."""
    global _BASE_TOKENIZER
    if _BASE_TOKENIZER is None:
        from transformers import AutoTokenizer

        from lmtune import paths

        _BASE_TOKENIZER = AutoTokenizer.from_pretrained(paths.BASE)
    return _BASE_TOKENIZER


_BASE_TOKENIZER = None
TASK = Chat
