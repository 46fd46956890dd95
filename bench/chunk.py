"""Chunk rows: the chunk stage's concatenate-and-cut vs run_clm.py's group_texts through datasets.map.

Input: a synthetic tokenized corpus saved like data/tokens (list<uint16> per document, documents of
log-normal length, mean ~256 tokens, WikiText-like), built once per size. Both sides read it
memory-mapped with load_from_disk and write their blocks as an Arrow file, so they do the same job.

Worker (a fresh process, so its peak RSS is the chunking's own): one untimed warm-up run, then REPEATS
timed ones, each rewriting OUT_DIR as a rerun of the stage would. The baseline's runs also follow an
untimed warm-up, in the bench's own process. (Warm-ups matter on this VM: pages the guest frees go
back to the host, and a fresh process's first 20 MB of new pages can cost 40 ms to fault in.)
    python -m bench.chunk ours TOKENS_DIR BLOCK_SIZE OUT_DIR REPEATS
"""
import hashlib
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Row, emit, median, worker


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
    """What stages/chunk.py does for one causal-LM split (no cap): mmap read, cut, atomic Arrow write."""
    import datasets

    from lmtune.data import chunking
    from lmtune.io import atomic_dir, save_tables

    start = time.perf_counter()
    ds = datasets.load_from_disk(str(tokens_dir))
    blocks = chunking.concat_blocks(ds.data.column("input_ids"), block_size)
    cut = time.perf_counter() - start
    with atomic_dir(out_dir) as tmp:
        save_tables({"train": blocks}, tmp)
    seconds = time.perf_counter() - start
    h = hashlib.sha256()  # over the zero-copy views: RSS stays the stage's
    for c in blocks.column("input_ids").chunks:
        h.update(memoryview(c.values.to_numpy()).cast("B"))
    dtype = blocks.column("input_ids").type.value_type.to_pandas_dtype().__name__
    return {"seconds": seconds, "cut_seconds": cut, "n_blocks": len(blocks), "digest": h.hexdigest(), "dtype": dtype}


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
    run = worker("chunk", "ours", small, block_size, work / "out_small", repeats)
    ours_s, cut_s = median(run["seconds"]), median(run["cut_seconds"])
    identical = run["digest"] == ref_digest and run["n_blocks"] == ref_n

    baseline(small, block_size, "chain")()  # warm-up, untimed
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
            note=(f"ours: load_from_disk (mmap) + chunking.concat_blocks + io.save_tables inside io.atomic_dir, as the stage does; "
                  f"median of {repeats} runs after a warm-up in a fresh process; of that, {cut_s * 1000:.1f} ms before the write; "
                  f"blocks identical to the global cut: {identical} ({ref_n:,} blocks of {block_size}). "
                  f"The per-batch group_texts drops each batch's remainder: {chain_n:,} blocks, "
                  f"{'identical' if chain_digest == ref_digest else 'NOT identical'} to the global cut."),
            extra={"ours_runs": run["seconds"], "ours_cut_runs": run["cut_seconds"], "chain_runs": chain_times, "identical_to_global_cut": identical,
                   "blocks": ref_n, "baseline_blocks": chain_n}),
        Row(f"chunk {m:g}M tokens vs seeds' sum(lists, [])", ours_s, sum_s, "s", sum_s / ours_s, "(informational)", None,
            note=f"median of {len(sum_times)} (quadratic in documents per batch; docs ~256 tokens here)",
            extra={"sum_runs": sum_times}),
    ]
    large = make_tokens(work / "tokens_large", tokens_large, seed=1)
    shutil.rmtree(small, ignore_errors=True)
    run_l = worker("chunk", "ours", large, block_size, work / "out_large", repeats)
    large_s, rss = median(run_l["seconds"]), run_l["max_rss_mb"]
    scale = tokens_large / tokens_small
    ok = rss < 2048 and large_s <= 1.2 * scale * ours_s
    rows.append(Row(
        f"chunk {tokens_large / 1e6:g}M tokens (peak RSS {rss:,.0f} MB)", large_s, ours_s, "s", None,
        f"< 2 GB peak RSS, time ≤ {1.2 * scale:g}× the {m:g}M row", ok,
        note=(f"baseline column = our {m:g}M time; {large_s / ours_s:.1f}× the time for {scale:g}× the tokens; "
              f"peak RSS of the whole process: python + datasets + the pages of the {tokens_large * 2 / 2**20:,.0f} MB memory-mapped "
              f"input that the write reads (the blocks are views of them, never a copy)"),
        extra={"runs": run_l["seconds"], "peak_rss_mb": rss, "time_ratio_vs_small": large_s / ours_s},
    ))
    shutil.rmtree(large, ignore_errors=True)
    return rows


if __name__ == "__main__":
    _, mode, tokens_dir, block, out_dir, repeats = sys.argv
    assert mode == "ours"
    runs = [ours(Path(tokens_dir), int(block), Path(out_dir)) for _ in range(1 + int(repeats))][1:]
    shutil.rmtree(out_dir, ignore_errors=True)
    assert len({(r["digest"], r["n_blocks"]) for r in runs}) == 1
    emit({**runs[0], "seconds": [r["seconds"] for r in runs], "cut_seconds": [r["cut_seconds"] for r in runs]})
