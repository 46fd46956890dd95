"""instruction: `prompt` + `response` per record (Dolly schema); the loss sees only the response and its
eos (prompt and padding labels are -100); examples padded/truncated (`pad`) or packed (`concat`)."""
import numpy as np
import pyarrow as pa

from lmtune.data import text
from lmtune.tasks.base import columns, examples_table, no_examples, pack_examples, pad_examples, scored_only
from lmtune.tasks.lm import LanguageModelTask


def instruction_prompt(fp, instruction: str, context: str | None = None) -> str:
    """`### Instruction:` block, `### Context:` block only when there is a context, `### Response:` header."""
    prompt = fp.instruction_template.format(instruction=instruction.strip())
    if context and context.strip():
        prompt += fp.context_template.format(context=context.strip())
    return prompt + fp.response_template


class Instruction(LanguageModelTask):
    name = "instruction"
    title = "instruction-tuned language model"
    flat_columns = ("prompt", "response")
    scored = "response tokens"

    def source_fields(self, fp) -> list[str]:
        return [f for f in (fp.instruction_field, fp.context_field, fp.response_field) if f]

    def flatten_record(self, fp, record: dict) -> dict:
        context = record.get(fp.context_field) if fp.context_field else None
        response = text.get_field(record, fp.response_field)
        return {"prompt": instruction_prompt(fp, text.get_field(record, fp.instruction_field) or "", context),
                "response": (response or "").strip()}

    def keep_flat(self, row: dict) -> bool:
        return bool(row["response"].strip())

    def document_text(self, row: dict) -> str:
        return row["prompt"] + row["response"]  # the whole example, as the model reads it

    def token_features(self, dtype: np.dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name)),
                                  "prompt_length": datasets.Value("int32")})

    def tokenize_batch(self, tokenizer, batch: dict, eos_id: int | None) -> dict:
        """prompt ids + response ids + eos, and the prompt's length (its labels become -100)."""
        eos = tokenizer.eos_token_id
        prompts = tokenizer(batch["prompt"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        responses = tokenizer(batch["response"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {"input_ids": [p + r + [eos] for p, r in zip(prompts, responses)],
                "prompt_length": [len(p) for p in prompts]}

    def chunk(self, ds, mode: str, block_size: int, pad_id: int, where: str) -> pa.Table:
        """concat: examples packed back to back into full blocks; pad: one example per row. Either way the
        prompts' labels are -100, and examples left with no scored token are dropped."""
        cols, ids_list, dtype = columns(ds)
        prompts = cols["prompt_length"]
        if mode == "concat":
            out = pack_examples(ids_list, prompts, block_size, dtype=dtype)
        else:
            out = pad_examples(ids_list, block_size, pad_id, prompts, dtype=dtype)
        out = scored_only(out)
        if len(out["input_ids"]) == 0:
            raise no_examples(where, block_size)
        return examples_table(out)

    def prompt_for(self, fp, prompt: str) -> str:
        """An instruction model is prompted with the template it was trained on."""
        return instruction_prompt(fp, prompt)
