"""causal_lm: one `text` per record (nested fields joined); the global token stream cut into blocks
(`chunk.mode: concat`, labels = input ids) or each document padded/truncated (`pad`). `pack` (the instruction and
chat tasks' mode, lmtune.data.packing) is refused here: it keeps each example whole in one row and truncates
one longer than the row, which would drop most of a document (a speech is thousands of tokens)."""
from typing import Annotated

from pydantic import Field

from lmtune.data import text
from lmtune.errors import UserError
from lmtune.params import Strict
from lmtune.tasks.base import Head, Metric, Task, token_metrics


class Settings(Strict):
    """params.yaml `causal_lm:`"""
    # Dotted paths into each record (e.g. `answers.text`); list values are joined with `joiner`.
    text_fields: Annotated[list[str], Field(min_length=1)]
    joiner: str


class CausalLM(Task):
    name = "causal_lm"
    title = "causal language model"
    head = Head("AutoModelForCausalLM", "CAUSAL_LM", "text-generation", generates=True)
    metrics = (
        *token_metrics("text"),
        Metric("n_tokens", "tokens", "d", None),
    )
    block_columns = (("doc", "pos", "n_tokens", "n_bytes"), ("nll",))
    Settings = Settings

    @classmethod
    def problems(cls, p) -> list[str]:
        if p.chunk.mode == "pack":
            return ["chunk.mode must be 'concat' or 'pad' when task is 'causal_lm' ('pack' keeps each "
                    "example whole in one row, truncating a longer one: task instruction or chat)"]
        return []

    def source_fields(self) -> list[str]:
        return list(self.settings.text_fields)

    def flatten_record(self, record: dict) -> dict:
        return {"text": text.flatten_record(record, self.settings.text_fields, self.settings.joiner)}

    def keep_flat(self, row: dict) -> bool:
        return bool(row["text"].strip())

    @staticmethod
    def document_text(row: dict) -> str:
        return row["text"]

    def token_features(self, dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name))})

    def tokenize_batch(self, tokenizer, batch: dict) -> dict:
        eos = tokenizer.eos_token_id if self.p.tokenize.eos_between_documents else None
        return {"input_ids": text.tokenize_texts(tokenizer, batch["text"], eos)}

    def examples(self, ds, pad_id: int, where: str):
        """concat: the global concatenation cut into blocks (lmtune.data.chunking, zero-copy); pad: per document."""
        from lmtune.data import chunking, examples  # the chunk stage's code: flatten and tokenize do not depend on it

        block_size = self.p.chunk.block_size
        if self.p.chunk.mode == "pad":
            _, ids_list, dtype = examples.columns(ds)
            out = examples.scored_only(examples.pad_examples(ids_list, block_size, pad_id, dtype=dtype))
            return examples.examples_table(examples.numbered(examples.none_left(out, where, block_size)))
        col = ds.data.column("input_ids")
        blocks = chunking.concat_blocks(col, block_size)
        if len(blocks) == 0:
            raise UserError(f"{where}: {chunking.count_values(col)} tokens, fewer than one block of chunk.block_size={block_size}")
        return blocks

    def evaluate(self, model, blocks, *, tokenizer, autocast=None, desc=None) -> dict:
        from lmtune.eval import metrics

        return metrics.evaluate_language_model(model, blocks, self.p.evaluate.batch_size, tokenizer=tokenizer,
                                               autocast=autocast, desc=desc)


TASK = CausalLM
