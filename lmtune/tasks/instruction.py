"""instruction: `prompt` + `response` per record (Dolly schema); the loss sees only the response and its
eos (prompt and padding labels are -100); examples padded/truncated (`pad`) or packed whole, several per
row, each attending only to itself (`pack`, lmtune.data.packing). `concat` (cutting the concatenation: examples
split across rows, each attending to the ones before it) is refused, naming `pack`."""
from typing import Optional

from pydantic import model_validator

from lmtune.data import text
from lmtune.params import Strict
from lmtune.tasks.base import Head, Metric, Task, token_metrics


class Settings(Strict):
    """params.yaml `instruction:` the record's fields, and the prompt built from them. The context block is
    added only when the record's context is non-empty; the loss sees only the response (+ eos)."""
    instruction_field: str
    context_field: Optional[str]
    response_field: str
    instruction_template: str   # must contain {instruction}
    context_template: str       # must contain {context}
    response_template: str      # the prompt's last part, before the response text

    @model_validator(mode="after")
    def _templates(self):
        problems = [f"instruction.{key} must contain {{{slot}}}"
                    for key, slot in (("instruction_template", "instruction"), ("context_template", "context"))
                    if f"{{{slot}}}" not in getattr(self, key)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def instruction_prompt(fp, instruction: str, context: str | None = None) -> str:
    """`### Instruction:` block, `### Context:` block only when there is a context, `### Response:` header."""
    prompt = fp.instruction_template.format(instruction=instruction.strip())
    if context and context.strip():
        prompt += fp.context_template.format(context=context.strip())
    return prompt + fp.response_template


class Instruction(Task):
    name = "instruction"
    title = "instruction-tuned language model"
    # The same head and numbers as causal_lm, over the response tokens only. Declared here, not shared with
    # causal_lm.py: a stage depends on the one task module it runs (dvc.yaml), so each is complete.
    head = Head("AutoModelForCausalLM", "CAUSAL_LM", "text-generation", generates=True)
    metrics = (
        *token_metrics("response"),
        Metric("n_tokens", "tokens", "d", None),
    )
    block_columns = (("doc", "pos", "n_tokens", "n_bytes"), ("nll",))
    Settings = Settings

    @classmethod
    def problems(cls, p) -> list[str]:
        if p.chunk.mode == "concat":
            return ["chunk.mode must be 'pack' or 'pad' when task is 'instruction' ('pack' puts whole examples several "
                    "per row, each attending only to itself: 'concat' would cut the concatenation across examples)"]
        return []

    def source_fields(self) -> list[str]:
        fp = self.settings
        return [f for f in (fp.instruction_field, fp.context_field, fp.response_field) if f]

    def flatten_record(self, record: dict) -> dict:
        fp = self.settings
        context = record.get(fp.context_field) if fp.context_field else None
        response = text.get_field(record, fp.response_field)
        return {"prompt": instruction_prompt(fp, text.get_field(record, fp.instruction_field) or "", context),
                "response": (response or "").strip()}

    def keep_flat(self, row: dict) -> bool:
        return bool(row["response"].strip())

    @staticmethod
    def document_text(row: dict) -> str:
        return row["prompt"] + row["response"]  # the whole example, as the model reads it

    def token_features(self, dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name)),
                                  "prompt_length": datasets.Value("int32")})

    def tokenize_batch(self, tokenizer, batch: dict) -> dict:
        """prompt ids + response ids + eos, and the prompt's length (its labels become -100)."""
        eos = tokenizer.eos_token_id
        prompts = tokenizer(batch["prompt"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        responses = tokenizer(batch["response"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {"input_ids": [p + r + [eos] for p, r in zip(prompts, responses)],
                "prompt_length": [len(p) for p in prompts]}

    def examples(self, ds, pad_id: int, where: str):
        """pack: examples packed whole into rows with position ids restarting at each (no example attends
        to another); pad: one example per row. Either way the prompts' labels are -100, and examples left
        with no scored token are dropped."""
        import numpy as np

        from lmtune.data import examples, packing  # the chunk stage's code: flatten and tokenize do not depend on it

        cols, ids_list, dtype = examples.columns(ds)
        prompts, block_size = cols["prompt_length"], self.p.chunk.block_size
        if self.p.chunk.mode == "pack":
            labels = [packing.labelled(x, np.arange(len(x)) >= int(n)) for x, n in zip(ids_list, prompts)]
            out = packing.pack_labelled(ids_list, labels, block_size, pad_id, dtype=dtype)
        else:
            out = examples.pad_examples(ids_list, block_size, pad_id, prompts, dtype=dtype)
        out = examples.none_left(examples.scored_only(out), where, block_size)
        return examples.examples_table(examples.numbered(out))

    def prompt(self, text: str) -> str:
        """An instruction model is prompted with the template it was trained on."""
        return instruction_prompt(self.settings, text)

    def evaluate(self, model, blocks, *, tokenizer, autocast=None, desc=None) -> dict:
        from lmtune.eval import metrics

        return metrics.evaluate_language_model(model, blocks, self.p.evaluate.batch_size, tokenizer=tokenizer,
                                               autocast=autocast, desc=desc)


TASK = Instruction
