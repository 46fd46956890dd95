"""Chunk rows: the chunk stage's concatenate-and-cut vs run_clm.py's group_texts through datasets.map.

Input: a synthetic tokenized corpus saved like data/tokens (list<uint16> per document, documents of
log-normal length, mean ~256 tokens, WikiText-like), built once per size. Both sides read it
memory-mapped with load_from_disk and write their blocks as an Arrow file, so they do the same job.

Worker (a fresh process, so its peak RSS is the chunking's own):
    python -m bench.chunk ours TOKENS_DIR BLOCK_SIZE OUT_DIR
"""
import hashlib
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Row, emit, median, timed, worker


def make_tokens(dest: Path, n_tokens: int, seed: int = 0, mean_len: int = 256) -> Path:
    """A DatasetDict-free Dataset on disk with one list<uint16> `input_ids` column (GPT-2 id range)."""
    import datasets
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.lognormal(np.log(mean_len) - 0.5, 1.0, size=n_tokens // mean_len * 2).astype(np.int64))
    ends = np.cumsum(lengths)
    n_docs = int(np.searchsorted(ends, n_tokens)) + 1
    lengths = lengths[:n_docs]
    lengths[-1] -= int(ends[n_docs - 1] - n_tokens)  # exactly n_tokens in all
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = rng.integers(0, 50257, size=n_tokens, dtype=np.uint16)
    arr = pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(pa.uint16())) if n_tokens >= 2**31 else \
        pa.ListArray.from_arrays(offsets.astype(np.int32), values)
    ds = datasets.Dataset(pa.table({"input_ids": arr}))
    ds.save_to_disk(str(dest))
    return dest


def global_cut_digest(tokens_dir: Path, block_size: int) -> tuple[str, int]:
    """sha256 and count of the reference blocks: every document concatenated, cut every block_size."""
    import datasets

    col = datasets.load_from_disk(str(tokens_dir)).data.column("input_ids")
    flat = np.concatenate([c.flatten().to_numpy() for c in col.chunks])
    n = len(flat) // block_size
    return hashlib.sha256(np.ascontiguousarray(flat[: n * block_size]).tobytes()).hexdigest(), n


def ours(tokens_dir: Path, block_size: int, out_dir: Path) -> dict:
    """What stages/chunk.py does for one causal-LM split (no cap): mmap read, cut, write Arrow."""
    import datasets

    from lmtune import chunking

    start = time.perf_counter()
    ds = datasets.load_from_disk(str(tokens_dir))
    col = ds.data.column("input_ids")
    blocks = chunking.blocks_from_table(ds.data.table, "input_ids", block_size, col.type.value_type.to_pandas_dtype())
    out = chunking.blocks_dataset(blocks)
    cut = time.perf_counter() - start
    out.save_to_disk(str(out_dir))
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(blocks)).cast("B")).hexdigest()  # no copy: RSS stays the stage's
    return {"seconds": seconds, "cut_seconds": cut, "n_blocks": int(len(blocks)), "digest": digest, "dtype": str(blocks.dtype)}


def run_clm_group_texts(block_size: int, concat: str):
    """run_clm.py's group_texts (itertools.chain), or the seeds' notebook version (sum(lists, [])).

    Given only input_ids and without run_clm's `labels` copy (our blocks store no labels either),
    which favours the baseline.
    """

    def group_texts(examples):
        if concat == "chain":
            concatenated = {k: list(itertools.chain(*examples[k])) for k in examples.keys()}
        else:
            concatenated = {k: sum(examples[k], []) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // block_size) * block_size
        return {k: [t[i: i + block_size] for i in range(0, total_length, block_size)] for k, t in concatenated.items()}

    return group_texts


def baseline(tokens_dir: Path, block_size: int, concat: str) -> tuple[float, int, str]:
    """Seconds, blocks and digest of group_texts through datasets.map(batched, batch_size=1000)."""
    import datasets

    def run():
        with tempfile.TemporaryDirectory(dir=tokens_dir.parent) as tmp:
            # A private copy: map writes its cache file next to the data, as run_clm's does.
            src = Path(tmp) / "tokens"
            shutil.copytree(tokens_dir, src)
            ds = datasets.load_from_disk(str(src))
            start = time.perf_counter()
            out = ds.map(run_clm_group_texts(block_size, concat), batched=True, batch_size=1000,
                         load_from_cache_file=False, cache_file_name=str(Path(tmp) / "grouped.arrow"))
            seconds = time.perf_counter() - start
            vals = np.concatenate([c.flatten().to_numpy() for c in out.data.column("input_ids").chunks])
            return seconds, len(out), hashlib.sha256(vals.astype(np.uint16).tobytes()).hexdigest()

    return run


def bench(work: Path, tokens_small: int, tokens_large: int, block_size: int, repeats: int, sum_repeats: int) -> list[Row]:
    import datasets

    datasets.disable_progress_bars()
    small = make_tokens(work / "tokens_small", tokens_small)
    ref_digest, ref_n = global_cut_digest(small, block_size)
    runs = [worker("chunk", "ours", small, block_size, work / f"out_small_{i}") for i in range(repeats)]
    ours_s = median([r["seconds"] for r in runs])
    cut_s = median([r["cut_seconds"] for r in runs])
    identical = all(r["digest"] == ref_digest and r["n_blocks"] == ref_n for r in runs)

    chain_times = []
    for _ in range(repeats):
        s, chain_n, chain_digest = baseline(small, block_size, "chain")()
        chain_times.append(s)
    sum_times = []
    for _ in range(sum_repeats):
        s, _, _ = baseline(small, block_size, "sum")()
        sum_times.append(s)
    chain_s, sum_s = median(chain_times), median(sum_times)
    m = tokens_small / 1e6
    rows = [
        Row(f"chunk {m:g}M tokens vs run_clm group_texts (chain)", ours_s, chain_s, "s", chain_s / ours_s,
            "≥ 50× faster, blocks identical to a global concatenate-and-cut", chain_s / ours_s >= 50 and identical,
            note=(f"ours: load_from_disk (mmap) + chunking.blocks_from_table + blocks_dataset + save_to_disk, median of {repeats} fresh processes; "
                  f"of that, {cut_s:.3f} s before save_to_disk ({chain_s / cut_s:.0f}× the chain version; datasets' save_to_disk, "
                  f"which writes in 1,000-row batches, is the rest); "
                  f"blocks identical to the global cut: {identical} ({ref_n:,} blocks of {block_size}). "
                  f"The per-batch group_texts drops each batch's remainder: {chain_n:,} blocks, "
                  f"{'identical' if chain_digest == ref_digest else 'NOT identical'} to the global cut."),
            extra={"ours_runs": [r["seconds"] for r in runs], "ours_cut_runs": [r["cut_seconds"] for r in runs], "chain_runs": chain_times, "identical_to_global_cut": identical,
                   "blocks": ref_n, "baseline_blocks": chain_n}),
        Row(f"chunk {m:g}M tokens vs seeds' sum(lists, [])", ours_s, sum_s, "s", sum_s / ours_s, "(informational)", None,
            note=f"median of {len(sum_times)} (quadratic in documents per batch; docs ~256 tokens here)",
            extra={"sum_runs": sum_times}),
    ]
    large = make_tokens(work / "tokens_large", tokens_large, seed=1)
    shutil.rmtree(small, ignore_errors=True)
    runs_l = [worker("chunk", "ours", large, block_size, work / f"out_large_{i}") for i in range(repeats)]
    for i in range(repeats):
        shutil.rmtree(work / f"out_large_{i}", ignore_errors=True)
    large_s = median([r["seconds"] for r in runs_l])
    rss = max(r["max_rss_mb"] for r in runs_l)
    scale = tokens_large / tokens_small
    ok = rss < 2048 and large_s <= 1.2 * scale * ours_s
    rows.append(Row(
        f"chunk {tokens_large / 1e6:g}M tokens (peak RSS {rss:,.0f} MB)", large_s, ours_s, "s", None,
        f"< 2 GB peak RSS, time ≤ {1.2 * scale:g}× the {m:g}M row", ok,
        note=(f"baseline column = our {m:g}M time; {large_s / ours_s:.1f}× the time for {scale:g}× the tokens; "
              f"peak RSS of the whole process (python + datasets + the mmapped input + the {tokens_large * 2 / 2**20:,.0f} MB uint16 blocks)"),
        extra={"runs": [r["seconds"] for r in runs_l], "peak_rss_mb": rss, "time_ratio_vs_small": large_s / ours_s},
    ))
    shutil.rmtree(large, ignore_errors=True)
    return rows


if __name__ == "__main__":
    _, mode, tokens_dir, block, out_dir = sys.argv
    assert mode == "ours"
    result = ours(Path(tokens_dir), int(block), Path(out_dir))
    shutil.rmtree(out_dir, ignore_errors=True)
    emit(result)
