"""Packed vs padded SFT training (lmtune.data.packing): real (non-pad) tokens per second, padding share, and
the same per-example loss.

The examples are a synthetic draw shaped like SFT data: lengths log-normal with median 130 tokens and
sigma 0.9 (Dolly-15k's prompt+response lengths in GPT-2 tokens have a median near 120 and a long tail
into the thousands; smoltalk's everyday conversations are of the same order), the first 30% of each a
prompt (labels -100). Padded = one example per row, right-padded to the block (`chunk.mode: pad`);
packed = whole examples several per row, positions restarting at each (`chunk.mode: pack`, task
instruction or chat). Informational third side: the padded rows trimmed per batch to its longest example
(dynamic padding, as DataCollatorWithPadding does). All sides train the same examples, one epoch, same model
init, batch of rows and optimizer, each timed after one warm-up step; the sides rotate, the median of the
repeats is reported.

    python -m bench.packing [--examples 96] [--block 512] [--batch 4] [--repeats 3] [--markdown FILE]
"""
import argparse
import statistics
import time

import numpy as np
import torch

from lmtune.data import packing
from lmtune.train.trainer import collate_blocks


def draw_examples(n: int, vocab: int, seed: int = 0, median: float = 130, sigma: float = 0.9):
    """Token ids and labels of `n` synthetic SFT examples (lengths log-normal, >= 16, prompt = first 30%)."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(16, rng.lognormal(np.log(median), sigma, size=n)).astype(int)
    ids = [rng.integers(1, vocab, size=k).astype(np.uint16) for k in lengths]
    labels = [packing.labelled(x, np.arange(len(x)) >= int(0.3 * len(x))) for x in ids]
    return ids, labels


def lengths_of(ids) -> np.ndarray:
    return np.array([len(x) for x in ids])


def rows_of(table: dict) -> list[dict]:
    return [{k: v[r] for k, v in table.items()} for r in range(len(table["input_ids"]))]


def make_model(vocab: int, block: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=128, n_positions=block, vocab_size=vocab,
                                      bos_token_id=0, eos_token_id=0, attn_implementation="sdpa"))


def trimmed(b: dict) -> dict:
    """A padded batch cut to its longest example (dynamic padding)."""
    n = int(b["attention_mask"].sum(1).max())
    return {k: v[:, :n] for k, v in b.items()}


def train_epoch(table: dict, vocab: int, block: int, batch: int, trim: bool = False) -> float:
    """Seconds for one epoch over the rows (after one untimed warm-up step), AdamW, as the Trainer trains
    (use_cache off: the Trainer sets it so, and a cache would switch off the packed-sequence mask)."""
    model = make_model(vocab, block)
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = rows_of(table)
    batches = [collate_blocks(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    batches = [trimmed(b) for b in batches] if trim else batches

    def step(b):
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])
    start = time.perf_counter()
    for b in batches:
        step(b)
    return time.perf_counter() - start


def per_example_nll(table: dict, vocab: int, block: int) -> list[float]:
    """Each example's summed NLL of its scored tokens under the initial model, in data order."""
    import torch.nn.functional as F

    model = make_model(vocab, block).eval()
    out = []
    for row in rows_of(table):
        b = collate_blocks([row])
        with torch.no_grad():
            logits = model(**{k: v for k, v in b.items() if k != "labels"}, use_cache=False).logits[0]
        pos = row.get("position_ids")
        starts = [0] if pos is None else list(np.flatnonzero(pos == 0))
        for a, e in zip(starts, [*starts[1:], block]):
            lab = torch.as_tensor(row["labels"][a:e].astype(np.int64))
            if (lab != -100).any():
                out.append(F.cross_entropy(logits[a:e - 1], lab[1:], ignore_index=-100, reduction="sum").item())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.packing", description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4, help="rows per optimizer step, both sides")
    ap.add_argument("--vocab", type=int, default=8192, help="a small vocabulary keeps the CPU run short")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    ids, labels = draw_examples(args.examples, args.vocab)
    real = sum(min(len(x), args.block) for x in ids)
    tables = {"padded": packing.pad_labelled(ids, labels, args.block, 0),
              "packed": packing.pack_labelled(ids, labels, args.block, 0)}
    n_rows = {k: len(t["input_ids"]) for k, t in tables.items()}
    sides = ("padded", "packed", "dynamic")
    times = {k: [] for k in sides}
    for r in range(args.repeats):
        for side in sides[r % 3:] + sides[:r % 3]:  # rotate which side runs first
            table = tables["padded" if side == "dynamic" else side]
            times[side].append(train_epoch(table, args.vocab, args.block, args.batch, trim=side == "dynamic"))
    tps = {k: real / statistics.median(v) for k, v in times.items()}
    slots = sum(int(np.max(np.minimum(lengths_of(ids[i:i + args.batch]), args.block)))
                * len(ids[i:i + args.batch]) for i in range(0, len(ids), args.batch))
    share = {k: 1 - real / (n * args.block) for k, n in n_rows.items()}
    nll = {k: per_example_nll(t, args.vocab, args.block) for k, t in tables.items()}
    diff = max(abs(a - b) for a, b in zip(nll["packed"], nll["padded"]))
    ratio = tps["packed"] / tps["padded"]
    lengths = lengths_of(ids)
    header = (f"{args.examples} examples (lengths median {np.median(lengths):.0f}, mean {lengths.mean():.0f}, "
              f"max {lengths.max()} tokens), block {args.block}, batch {args.batch} rows, tiny GPT-2 (2 layers, "
              f"128 wide, vocab {args.vocab}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    lines = ["| row | packed (`chunk.mode: pack`) | padded (`pad`, same run) | ratio | target | met |",
             "|---|---|---|---|---|---|",
             f"| SFT train, real (non-pad) tokens/s | {tps['packed']:,.0f} | {tps['padded']:,.0f} | {ratio:.2f}× | "
             f"≥ 2× padded | {'yes' if ratio >= 2 else '**no**'} |",
             f"| padding share of the rows | {share['packed']:.3f} ({n_rows['packed']} rows) | "
             f"{share['padded']:.3f} ({n_rows['padded']} rows) | — | (informational) | n/a |",
             f"| SFT train, real tokens/s: packed vs dynamic padding (each batch cut to its longest example; "
             f"padding share {1 - real / slots:.3f}) | {tps['packed']:,.0f} | {tps['dynamic']:,.0f} | "
             f"{tps['packed'] / tps['dynamic']:.2f}× | (informational) | n/a |",
             f"| per-example summed NLL, max abs difference packed vs padded | {diff:.2e} | — | — | ≤ 1e-4 | "
             f"{'yes' if diff <= 1e-4 else '**no**'} |", "",
             f"- {header}; epoch seconds packed {[round(t, 2) for t in times['packed']]}, padded "
             f"{[round(t, 2) for t in times['padded']]}, dynamic {[round(t, 2) for t in times['dynamic']]} "
             f"(median of {args.repeats}, the sides rotating)."]
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
