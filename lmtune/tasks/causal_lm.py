"""causal_lm: one `text` per record (nested fields joined); the global token stream cut into blocks
(`chunk.mode: concat`, labels = input ids) or each document padded/truncated (`pad`)."""
import numpy as np
import pyarrow as pa

from lmtune.data import text
from lmtune.errors import UserError
from lmtune.tasks.base import columns, examples_table, no_examples, pad_examples, scored_only
from lmtune.tasks.lm import LanguageModelTask


class CausalLM(LanguageModelTask):
    name = "causal_lm"
    title = "causal language model"
    flat_columns = ("text",)

    def source_fields(self, fp) -> list[str]:
        return list(fp.text_fields)

    def flatten_record(self, fp, record: dict) -> dict:
        return {"text": text.flatten_record(record, fp.text_fields, fp.joiner)}

    def keep_flat(self, row: dict) -> bool:
        return bool(row["text"].strip())

    def document_text(self, row: dict) -> str:
        return row["text"]

    def token_features(self, dtype: np.dtype):
        import datasets

        return datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name))})

    def tokenize_batch(self, tokenizer, batch: dict, eos_id: int | None) -> dict:
        return {"input_ids": text.tokenize_texts(tokenizer, batch["text"], eos_id)}

    def chunk(self, ds, mode: str, block_size: int, pad_id: int, where: str) -> pa.Table:
        """concat: the global concatenation cut into blocks (lmtune.data.chunking, zero-copy); pad: per document."""
        from lmtune.data import chunking

        if mode == "pad":
            _, ids_list, dtype = columns(ds)
            out = scored_only(pad_examples(ids_list, block_size, pad_id, dtype=dtype))
            if len(out["input_ids"]) == 0:
                raise no_examples(where, block_size)
            return examples_table(out)
        col = ds.data.column("input_ids")
        blocks = chunking.concat_blocks(col, block_size)
        if len(blocks) == 0:
            raise UserError(f"{where}: {chunking.count_values(col)} tokens, fewer than one block of chunk.block_size={block_size}")
        return blocks
