"""What a training step is given: the batch the collator builds and the labels the model receives.

The causal-LM chunks carry no labels (the collator copies the input ids); instruction and padded chunks carry
their own, with -100 on the prompt and the padding, and those must reach the model unchanged: a collator that
rebuilt labels from the input ids would train an instruction model on its prompts and padding, and every
end-to-end check (tuned loss < base loss) would still pass.
"""
import json

import datasets
import numpy as np
import pytest
import torch
import transformers

from lmtune import params, tasks, training
from lmtune.io import save_tables

IGNORE = -100


def test_collate_blocks_keeps_given_labels_and_otherwise_copies_the_input_ids():
    with_labels = [{"input_ids": np.array([5, 6, 7], np.uint16), "attention_mask": np.array([1, 1, 0], np.int8),
                    "labels": np.array([IGNORE, 6, IGNORE], np.int32)},
                   {"input_ids": np.array([8, 9, 10], np.uint16), "attention_mask": np.array([1, 1, 1], np.int8),
                    "labels": np.array([IGNORE, IGNORE, 10], np.int32)}]
    batch = training.collate_blocks(with_labels)
    assert batch["labels"].tolist() == [[IGNORE, 6, IGNORE], [IGNORE, IGNORE, 10]]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 10]] and batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert {t.dtype for t in batch.values()} == {torch.int64}  # embedding lookups and the loss need int64

    blocks = [{"input_ids": np.array([1, 2, 3], np.uint16)}, {"input_ids": np.array([4, 5, 6], np.uint16)}]
    batch = training.collate_blocks(blocks)
    assert set(batch) == {"input_ids", "labels"} and batch["labels"].tolist() == [[1, 2, 3], [4, 5, 6]]
    batch["labels"][0, 0] = IGNORE  # a copy: masking labels must not change the inputs
    assert batch["input_ids"][0, 0] == 1


def instruction_chunks(tmp_path):
    """Two instruction examples chunked as the chunk stage does (pad mode, block 8), saved and reloaded as
    the train stage reads them. Token ids: prompt, then response + eos (2); pad id 0."""
    task = tasks.get("instruction")
    ids, prompt_lengths = [[3, 4, 5, 6, 7, 8, 2], [9, 10, 11, 12, 2]], [4, 2]
    tokens = datasets.Dataset.from_dict({"input_ids": ids, "prompt_length": prompt_lengths},
                                        features=task.token_features(np.dtype("uint16")))
    save_tables({"train": task.chunk(tokens, "pad", 8, 0, "test")}, tmp_path / "chunks")
    # The response and its eos are the only targets: positions 4-6 of the first, 2-4 of the second.
    expected = [[IGNORE] * 4 + [7, 8, 2] + [IGNORE], [IGNORE] * 2 + [11, 12, 2] + [IGNORE] * 3]
    return datasets.load_from_disk(tmp_path / "chunks")["train"].with_format("numpy"), expected


def test_a_training_step_learns_only_from_the_response_tokens(tmp_path):
    train_ds, expected = instruction_chunks(tmp_path)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    seen = {}

    def keep_labels(module, args, kwargs):
        seen["input_ids"], seen["labels"] = kwargs["input_ids"].clone(), kwargs["labels"].clone()

    def keep_logits(module, args, out):
        out.retain_grad()  # the gradient of the step's loss with respect to each position's logits
        seen["logits"] = out

    model.register_forward_pre_hook(keep_labels, with_kwargs=True)
    model.lm_head.register_forward_hook(keep_logits)
    tp = params.load().train.model_copy(update={
        "max_steps": 1, "batch_size": 2, "gradient_accumulation_steps": 1, "eval_steps": 0, "early_stopping_patience": 0,
        "save_steps": 1, "logging_steps": 1, "precision": "fp32", "torch_compile": False})
    ckpts = tmp_path / "checkpoints"
    training.train(model, None, train_ds, None, tp, 0, ckpts, "fp", tmp_path / "live")

    # The batch order is shuffled: match each row the model saw to its example by the input ids.
    by_ids = {tuple(row["input_ids"].tolist()): label for row, label in zip(train_ds, expected)}
    want = torch.tensor([by_ids[tuple(row)] for row in seen["input_ids"].tolist()])
    assert seen["labels"].tolist() == want.tolist()
    # Logits at position i predict token i + 1: a zero gradient wherever that token is a prompt or padding
    # token (and at the last position, which predicts nothing), a non-zero one wherever it is a target.
    grad = seen["logits"].grad.abs().sum(-1)
    scored = torch.zeros_like(want, dtype=torch.bool)
    scored[:, :-1] = want[:, 1:] != IGNORE
    assert scored.sum() == 6
    assert (grad[~scored] == 0).all() and (grad[scored] > 0).all(), grad
    # The checkpoint folder is stamped with the fingerprint and the number of processes (1 here).
    stamp = json.loads((ckpts / training.FINGERPRINT).read_text())["fingerprint"]
    assert stamp == training.with_world_size("fp", 1) != training.with_world_size("fp", 2)
