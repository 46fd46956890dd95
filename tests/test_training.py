"""What a training step is given: the batch the collator builds and the labels the model receives.

The causal-LM chunks carry no labels (the collator copies the input ids); instruction and padded chunks carry
their own, with -100 on the prompt and the padding, and those must reach the model unchanged: a collator that
rebuilt labels from the input ids would train an instruction model on its prompts and padding, and every
end-to-end check (tuned loss < base loss) would still pass.
"""
import json
import sys

import datasets
import numpy as np
import pytest
import torch
import transformers

from lmtune import params, tasks
from lmtune.train import checkpoints, trainer
from lmtune.io import save_tables

IGNORE = -100


def test_collate_blocks_keeps_given_labels_and_otherwise_copies_the_input_ids():
    with_labels = [{"input_ids": np.array([5, 6, 7], np.uint16), "attention_mask": np.array([1, 1, 0], np.int8),
                    "labels": np.array([IGNORE, 6, IGNORE], np.int32)},
                   {"input_ids": np.array([8, 9, 10], np.uint16), "attention_mask": np.array([1, 1, 1], np.int8),
                    "labels": np.array([IGNORE, IGNORE, 10], np.int32)}]
    batch = trainer.collate_blocks(with_labels)
    assert batch["labels"].tolist() == [[IGNORE, 6, IGNORE], [IGNORE, IGNORE, 10]]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 10]] and batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert {t.dtype for t in batch.values()} == {torch.int64}  # embedding lookups and the loss need int64

    blocks = [{"input_ids": np.array([1, 2, 3], np.uint16)}, {"input_ids": np.array([4, 5, 6], np.uint16)}]
    batch = trainer.collate_blocks(blocks)
    assert set(batch) == {"input_ids", "labels"} and batch["labels"].tolist() == [[1, 2, 3], [4, 5, 6]]
    batch["labels"][0, 0] = IGNORE  # a copy: masking labels must not change the inputs
    assert batch["input_ids"][0, 0] == 1


def instruction_chunks(tmp_path):
    """Two instruction examples chunked as the chunk stage does (pad mode, block 8), saved and reloaded as
    the train stage reads them. Token ids: prompt, then response + eos (2); pad id 0."""
    p = params.load()
    task = tasks.get("instruction")(p.model_copy(update={"chunk": p.chunk.model_copy(update={"mode": "pad", "block_size": 8})}))
    ids, prompt_lengths = [[3, 4, 5, 6, 7, 8, 2], [9, 10, 11, 12, 2]], [4, 2]
    tokens = datasets.Dataset.from_dict({"input_ids": ids, "prompt_length": prompt_lengths},
                                        features=task.token_features(np.dtype("uint16")))
    save_tables({"train": task.examples(tokens, 0, "test")}, tmp_path / "chunks")
    # The response and its eos are the only targets: positions 4-6 of the first, 2-4 of the second.
    expected = [[IGNORE] * 4 + [7, 8, 2] + [IGNORE], [IGNORE] * 2 + [11, 12, 2] + [IGNORE] * 3]
    return datasets.load_from_disk(tmp_path / "chunks")["train"].with_format("numpy"), expected


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked-loss", "model-loss"])
def test_a_training_step_learns_only_from_the_response_tokens(tmp_path, monkeypatch, chunked):
    train_ds, expected = instruction_chunks(tmp_path)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    seen = {}
    compute_loss = trainer.FiniteLossTrainer.compute_loss

    def keep_labels(self, model, inputs, *args, **kwargs):
        seen["input_ids"], seen["labels"] = inputs["input_ids"].clone(), inputs["labels"].clone()
        return compute_loss(self, model, inputs, *args, **kwargs)

    def keep_hidden(module, args, out):
        # The gradient of the step's loss with respect to each position's final hidden state, the LM head's
        # input (the chunked loss never makes the whole logits; zero here iff zero at that position's logits).
        out.last_hidden_state.retain_grad()
        seen["hidden"] = out.last_hidden_state

    monkeypatch.setattr(trainer.FiniteLossTrainer, "compute_loss", keep_labels)
    monkeypatch.setattr(trainer.FiniteLossTrainer, "chunked_lm_loss", chunked)
    model.transformer.register_forward_hook(keep_hidden)
    tp = params.load().train.model_copy(update={
        "max_steps": 1, "batch_size": 2, "gradient_accumulation_steps": 1, "eval_steps": 0, "early_stopping_patience": 0,
        "save_steps": 1, "logging_steps": 1, "precision": "fp32", "torch_compile": False})
    ckpts = tmp_path / "checkpoints"
    trainer.train(model, None, train_ds, None, tp, 0, ckpts, "fp")

    # The batch order is shuffled: match each row the model saw to its example by the input ids.
    by_ids = {tuple(row["input_ids"].tolist()): label for row, label in zip(train_ds, expected)}
    want = torch.tensor([by_ids[tuple(row)] for row in seen["input_ids"].tolist()])
    assert seen["labels"].tolist() == want.tolist()
    # Logits at position i predict token i + 1: a zero gradient wherever that token is a prompt or padding
    # token (and at the last position, which predicts nothing), a non-zero one wherever it is a target.
    grad = seen["hidden"].grad.abs().sum(-1)
    scored = torch.zeros_like(want, dtype=torch.bool)
    scored[:, :-1] = want[:, 1:] != IGNORE
    assert scored.sum() == 6
    assert (grad[~scored] == 0).all() and (grad[scored] > 0).all(), grad
    # The checkpoint folder is stamped with the fingerprint it was given (the stage's: checkpoints.identity).
    assert json.loads((ckpts / checkpoints.FINGERPRINT).read_text())["fingerprint"] == "fp"


# ---- training_arguments: every train param reaches the Trainer ------------------------------------

def test_every_train_param_reaches_the_training_arguments(tmp_path):
    tp = params.load().train.model_copy(update={
        "learning_rate": 3e-4, "weight_decay": 0.1, "epochs": 2, "max_steps": 7, "batch_size": 3,
        "gradient_accumulation_steps": 2, "warmup_ratio": 0.25, "lr_scheduler": "cosine", "max_grad_norm": 0.5,
        "gradient_checkpointing": True, "eval_steps": 1, "early_stopping_patience": 1, "save_steps": 2,
        "save_total_limit": 3, "logging_steps": 4, "dataloader_workers": 0, "torch_compile": False,
        "precision": "fp32"})
    args = trainer.training_arguments(tp, 11, tmp_path / "ckpt")
    got = {k: getattr(args, k) for k in (
        "output_dir", "seed", "data_seed", "learning_rate", "weight_decay", "num_train_epochs", "max_steps",
        "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "warmup_steps",
        "max_grad_norm", "eval_steps", "save_steps", "save_total_limit", "load_best_model_at_end",
        "metric_for_best_model", "greater_is_better", "logging_steps", "logging_first_step", "label_names",
        "logging_nan_inf_filter", "report_to", "use_cpu", "bf16", "fp16", "disable_tqdm")}
    assert got == {
        "output_dir": str(tmp_path / "ckpt"), "seed": 11, "data_seed": 11, "learning_rate": 3e-4, "weight_decay": 0.1,
        "num_train_epochs": 2, "max_steps": 7, "per_device_train_batch_size": 3, "per_device_eval_batch_size": 3,
        "gradient_accumulation_steps": 2, "warmup_steps": 0.25, "max_grad_norm": 0.5, "eval_steps": 1,
        "save_steps": 2, "save_total_limit": 3, "load_best_model_at_end": True, "metric_for_best_model": "eval_loss",
        "greater_is_better": False, "logging_steps": 4, "logging_first_step": True,
        "label_names": ["labels"],  # the key collate_blocks gives the labels (peft hides them from the Trainer)
        "logging_nan_inf_filter": False, "report_to": [], "use_cpu": not torch.cuda.is_available(),
        "bf16": False, "fp16": False,
        "disable_tqdm": not sys.stderr.isatty()}  # a progress bar on a terminal only (pytest captures stderr)
    assert (args.lr_scheduler_type.value, args.eval_strategy.value, args.save_strategy.value) == ("cosine", "steps", "steps")
    flag = trainer.checkpointing_flag(True)
    assert getattr(args, next(iter(flag))) is True

    quiet = trainer.training_arguments(tp.model_copy(update={"eval_steps": 0, "early_stopping_patience": 0,
                                                              "gradient_checkpointing": False}), 11, tmp_path)
    assert (quiet.eval_strategy.value, quiet.eval_steps, quiet.load_best_model_at_end) == ("no", None, False)
    assert (quiet.metric_for_best_model, quiet.greater_is_better) == (None, None)
    assert getattr(quiet, next(iter(flag))) is False


def test_optimizer_follows_the_torch_version_boundary(monkeypatch):
    for version, cpu_optim in (("2.3.1", "adamw_torch"), ("2.4.0", "adamw_torch_fused"), ("2.5.1", "adamw_torch_fused")):
        monkeypatch.setattr(torch, "__version__", version)
        assert (trainer.optimizer_name(cuda=False), trainer.optimizer_name(cuda=True)) == (cpu_optim, "adamw_torch_fused")


def test_fp16_on_cpu_is_refused_in_one_line():
    with pytest.raises(Exception) as e:
        trainer.precision_flags("fp16", False, False)
    assert str(e.value) == "train.precision: fp16 needs a CUDA GPU (use auto or fp32 on CPU)"


def test_collate_blocks_gives_the_model_no_ids():
    # data/chunks' doc and pos say where an example came from (for metrics/blocks.csv); a forward pass given
    # them would fail (an unexpected keyword) or, worse, take them for something else.
    rows = [{"input_ids": np.array([1, 2], np.uint16), "doc": np.int64(3), "pos": np.int64(0)}]
    assert set(trainer.collate_blocks(rows)) == {"input_ids", "labels"}


def test_a_batch_of_one_example():
    batch = trainer.collate_blocks([{"input_ids": np.array([1, 2], np.uint16)}])
    assert batch["input_ids"].tolist() == [[1, 2]] and batch["labels"].tolist() == [[1, 2]]


def test_mean_logged_loss_without_losses_is_none():
    assert trainer.mean_logged_loss([]) is None
    assert trainer.mean_logged_loss([{"eval_loss": 2.0, "step": 4}]) is None


def test_folder_fingerprint_covers_file_names_too(tmp_path):
    from lmtune.io import folder_fingerprint

    data = tmp_path / "chunks"
    data.mkdir()
    (data / "a.arrow").write_bytes(b"\x00" * 8)
    before = folder_fingerprint(data)
    (data / "a.arrow").rename(data / "b.arrow")  # same bytes, another split or shard name
    assert folder_fingerprint(data) != before


def test_checkpoint_choices_are_printed(tmp_path, capsys):
    ckpts = tmp_path / "ckpts"
    for step, complete in ((4, True), (6, False)):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 8}))
    (ckpts / checkpoints.FINGERPRINT).write_text(json.dumps({"fingerprint": "fp"}))
    assert checkpoints.resumable_checkpoint(ckpts, "fp") == str(ckpts / "checkpoint-4")
    out = capsys.readouterr().out.splitlines()
    assert out == [f"discarding incomplete checkpoint {ckpts / 'checkpoint-6'}", f"resuming from {ckpts / 'checkpoint-4'}"]
    (ckpts / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"global_step": 8, "max_steps": 8}))
    assert checkpoints.resumable_checkpoint(ckpts, "fp") is None
    assert capsys.readouterr().out.splitlines() == [f"discarding checkpoints in {ckpts}: checkpoint-4 already finished training"]


def test_curves_skip_entries_without_numbers_and_write_only_the_curves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive may write dvc.yaml / a report where it runs: it must not
    history = [{"loss": 3.0, "step": 1}, {"note": "resumed", "step": 2}, {"loss": 2.0, "step": 3},
               {"train_runtime": 1.0, "step": 3}, {"loss": 1.0, "step": 4}]
    trainer.write_curves(history, tmp_path / "live")
    assert (tmp_path / "live/plots/metrics/loss.tsv").read_text().split() == ["step", "loss", "1", "3.0", "3", "2.0", "4", "1.0"]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    # Only the loss curve (no `step` or wall-clock curve, no summary metrics.json), and nothing outside live/:
    # no dvc.yaml, report or DVC experiment.
    assert files == ["live/plots/metrics/loss.tsv"], files


def test_gpu_and_mps_machines_get_their_optimizer_and_device(monkeypatch, tmp_path):
    """Checked with CUDA / MPS pretended (TrainingArguments stubbed): the fused AdamW on CUDA whatever the
    torch version, and `use_cpu` off as soon as either accelerator is there."""
    monkeypatch.setattr(trainer.transformers, "TrainingArguments", lambda **kw: kw)
    monkeypatch.setattr(torch, "__version__", "2.3.1")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    tp = params.load().train.model_copy(update={"precision": "fp32"})
    for cuda, mps, use_cpu, optim in ((True, False, False, "adamw_torch_fused"), (False, True, False, "adamw_torch"),
                                      (False, False, True, "adamw_torch")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        kw = trainer.training_arguments(tp, 0, tmp_path)
        assert (kw["use_cpu"], kw["optim"], kw["dataloader_pin_memory"]) == (use_cpu, optim, cuda), (cuda, mps)


def test_training_arguments_ask_compile_and_liger_for_this_device(tmp_path, monkeypatch):
    """torch.compile's auto rule gets the device and the planned steps; Liger's kernel is asked for when it is
    available (CUDA with liger_kernel installed, neither here: both stand-ins record what they were asked)."""
    from lmtune.train import hardware

    asked = []
    monkeypatch.setattr(hardware, "use_torch_compile", lambda setting, cuda, steps: (asked.append((setting, cuda, steps)), False)[1])
    monkeypatch.setattr(trainer, "liger_available", lambda cuda: (asked.append(("liger", cuda)), True)[1])
    tp = params.load().train.model_copy(update={"torch_compile": "auto", "precision": "fp32"})
    args = trainer.training_arguments(tp, 0, tmp_path, planned_steps=12)
    cuda = torch.cuda.is_available()
    assert asked == [("auto", cuda, 12), ("liger", cuda)] and args.use_liger_kernel is True
    monkeypatch.setattr(trainer, "liger_available", lambda cuda: False)
    assert trainer.training_arguments(tp, 0, tmp_path, planned_steps=12).use_liger_kernel is False
