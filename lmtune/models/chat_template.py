"""The chat template a base model without one can opt into (`model.chat_template: chatml`).

ChatML's layout (`<|im_start|>role\\n...`), with the tokenizer's own eos token closing every turn: a
tokenizer that has `<|im_end|>` as its eos (SmolLM2, Qwen) gets exactly ChatML, and one that does not
(GPT-2's `<|endoftext|>`) still ends each reply with the single token `generate()` stops at, so no
embedding has to be added. A tokenizer that ships a template keeps its own.
"""
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML}


def with_default_template(tokenizer, choice: str | None):
    """The tokenizer with the opted-in template when it has none of its own (`choice` None: unchanged)."""
    if choice is not None and not tokenizer.chat_template:
        tokenizer.chat_template = TEMPLATES[choice]
    return tokenizer
