"""Supervised examples as fixed-size rows, each example kept whole: padded one per row, or packed several
per row with position ids that restart at each example.

Packed rows carry `position_ids` and no `attention_mask`. transformers (>= 4.5x, `masking_utils`) reads a
position reset inside a row as the start of another sequence when no 2-D attention mask is given, and builds
a block-diagonal causal mask from it (SDPA and eager; flash-attention gets the matching varlen offsets), so
no example attends to the one before it and each sees the positions it would see alone
(tests/test_packing.py checks the per-example losses against unpacked runs).
"""
import numpy as np

from lmtune.data.examples import IGNORE_INDEX


def labelled(ids, scored) -> np.ndarray:
    """Labels of one example: its ids where `scored` is true, -100 elsewhere."""
    ids = np.asarray(ids)
    return np.where(np.asarray(scored, dtype=bool), ids.astype(np.int32), IGNORE_INDEX).astype(np.int32)


def pad_labelled(ids_list, labels_list, block_size: int, pad_id: int, dtype=np.uint16) -> dict:
    """One example per row, truncated to block_size and right-padded: attention_mask 1 on tokens, labels
    -100 on padding; doc = the example's index."""
    n = len(ids_list)
    out = {"input_ids": np.full((n, block_size), pad_id, dtype=dtype),
           "attention_mask": np.zeros((n, block_size), dtype=np.int8),
           "labels": np.full((n, block_size), IGNORE_INDEX, dtype=np.int32),
           "doc": np.arange(n, dtype=np.int64)}
    for i, (ids, labels) in enumerate(zip(ids_list, labels_list)):
        k = min(len(ids), block_size)
        out["input_ids"][i, :k] = np.asarray(ids)[:k]
        out["attention_mask"][i, :k] = 1
        out["labels"][i, :k] = np.asarray(labels)[:k]
    return out


def pack_layout(lengths, block_size: int) -> list[list[int]]:
    """Which examples share each row: next-fit in data order, a row closed as soon as the next example does
    not fit in what is left of it, so no example is split across rows; one longer than a row gets a row of
    its own (and is truncated to it)."""
    rows, current, used = [], [], 0
    for i, n in enumerate(lengths):
        n = min(int(n), block_size)
        if current and used + n > block_size:
            rows.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        rows.append(current)
    return rows


def pack_labelled(ids_list, labels_list, block_size: int, pad_id: int, dtype=np.uint16) -> dict:
    """Examples packed whole into rows (pack_layout): input_ids, labels and position_ids 0.. per example;
    a row's unused tail is pad tokens, labels -100, with positions of their own (a separate, unscored
    sequence that no example attends to); doc = the index of the row's first example (the examples of a
    row are consecutive, so a row belongs to one run of the split's examples)."""
    layout = pack_layout([len(x) for x in ids_list], block_size)
    n = len(layout)
    ids = np.full((n, block_size), pad_id, dtype=dtype)
    labels = np.full((n, block_size), IGNORE_INDEX, dtype=np.int32)
    positions = np.zeros((n, block_size), dtype=np.int32)
    for r, members in enumerate(layout):
        start = 0
        for i in members:
            k = min(len(ids_list[i]), block_size)
            ids[r, start:start + k] = np.asarray(ids_list[i])[:k]
            labels[r, start:start + k] = np.asarray(labels_list[i])[:k]
            positions[r, start:start + k] = np.arange(k)
            start += k
        positions[r, start:] = np.arange(block_size - start)
    doc = np.array([members[0] for members in layout], dtype=np.int64)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "doc": doc}
