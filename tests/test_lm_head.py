"""The chunked LM head (lmtune.eval.lm_head): the loss, its gradients and the evaluation numbers equal the plain
path's (the model's own logits), for tied and untied heads, LoRA-wrapped models and gradient accumulation; and
the logits are never saved whole."""
import numpy as np
import pytest
import torch
import transformers

from lmtune.eval import lm_head, metrics
from lmtune.params import TrainParams
from lmtune.train import trainer

VOCAB = 1000


def gpt2():
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=VOCAB,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def llama(tied=False):
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=64,
                                   tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def batch(seed=1, n=3, seq=40):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, seq), generator=g)
    labels = ids.clone()
    labels[0, :7] = -100   # an instruction-style prompt: not scored
    labels[-1, -5:] = -100
    return ids, labels


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def plain_and_chunked(model, ids, labels, num_items=None, rows=7):
    """(loss, grads) of the model's own loss, then of the chunked one (rows: several chunks, a ragged last one)."""
    kw = {} if num_items is None else {"num_items_in_batch": num_items}
    model.zero_grad()
    plain = model(input_ids=ids, labels=labels, **kw).loss
    plain.backward()
    g_plain = grads(model)
    model.zero_grad()
    backbone, head = lm_head.parts(model)
    hidden = lm_head.hidden_states(model, backbone, {"input_ids": ids})
    chunked = lm_head.chunked_loss(hidden, head, labels, num_items, rows=rows)
    chunked.backward()
    return (plain, g_plain), (chunked, grads(model))


def assert_same(a, b, tol=1e-5):
    (loss_a, g_a), (loss_b, g_b) = a, b
    assert abs(loss_a.item() - loss_b.item()) <= tol * max(1.0, abs(loss_a.item()))
    assert g_a.keys() == g_b.keys() and g_a
    for name in g_a:
        torch.testing.assert_close(g_b[name], g_a[name], rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("make", [gpt2, llama, lambda: llama(tied=True)], ids=["gpt2-tied", "llama", "llama-tied"])
@pytest.mark.parametrize("num_items", [None, 150])
def test_loss_and_gradients_equal_the_models_own(make, num_items):
    model = make().train()
    ids, labels = batch()
    assert_same(*plain_and_chunked(model, ids, labels, None if num_items is None else torch.tensor(num_items)))


def test_lora_wrapped_model_with_a_trained_head():
    import peft

    model = peft.get_peft_model(llama(), peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                         target_modules=["q_proj", "v_proj", "lm_head"],
                                                         task_type="CAUSAL_LM"))
    model.train()
    ids, labels = batch()
    plain, chunked = plain_and_chunked(model, ids, labels)
    assert any("lm_head" in n for n in plain[1])  # the head's adapter is trained, through the chunks too
    assert_same(plain, chunked)


def test_the_forward_saves_no_whole_logits():
    """Nothing logits-sized is saved for the backward pass: at most the hidden-state and head-weight gradients."""
    model = gpt2().train()
    ids, labels = batch(n=4, seq=64)
    backbone, head = lm_head.parts(model)
    hidden = lm_head.hidden_states(model, backbone, {"input_ids": ids})
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        lm_head.chunked_loss(hidden, head, labels, rows=16)
    assert saved and max(saved) <= max(hidden.numel(), head.weight.numel())  # 32,000 of 256,000 logits
    plain = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: plain.append(t.numel()) or t, lambda t: t):
        model(input_ids=ids, labels=labels)
    assert max(plain) >= 4 * 64 * VOCAB  # the model's own loss saves its whole log-softmax


def test_models_it_does_not_know_keep_their_own_logits():
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   vocab_size=VOCAB, num_labels=3, pad_token_id=0)
    assert lm_head.parts(transformers.LlamaForSequenceClassification(cfg)) is None
    gemma = transformers.Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, head_dim=16, vocab_size=VOCAB)
    assert lm_head.parts(transformers.Gemma2ForCausalLM(gemma)) is None  # soft-caps its logits after the head


def test_evaluation_numbers_equal_the_plain_path():
    model = llama(tied=True)
    ids, labels = batch(n=5, seq=40)
    mask = torch.ones_like(ids)
    mask[4, 30:] = 0  # a padded block: its padding is not scored
    data = [{"input_ids": i, "labels": l, "attention_mask": m} for i, l, m in zip(ids, labels, mask)]
    byte_lengths = torch.arange(VOCAB) % 5
    runs = [metrics.evaluate_causal_lm(model, data, batch_size=2, byte_lengths=byte_lengths, chunked=c)
            for c in (False, True)]
    plain, chunked = runs
    assert plain["n_tokens"] == chunked["n_tokens"] and plain["accuracy"] == chunked["accuracy"]
    for key in ("loss", "perplexity", "bits_per_byte"):
        assert chunked[key] == pytest.approx(plain[key], rel=1e-6, abs=0), key
    np.testing.assert_allclose(chunked["blocks"]["nll"], plain["blocks"]["nll"], rtol=1e-6)


def test_hidden_stats_chunks_equal_one_pass_over_the_logits():
    model = gpt2().eval()
    ids, labels = batch(n=2, seq=50)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        backbone, head = lm_head.parts(model)
        hidden = lm_head.hidden_states(model, backbone, {"input_ids": ids})
        a_blocks, b_blocks = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
        a = metrics.causal_lm_batch_stats(logits, labels, a_blocks)
        b = metrics.causal_lm_hidden_stats(hidden, head, labels, b_blocks, rows=9)
    assert a[1:] == b[1:] and b[0] == pytest.approx(a[0], rel=1e-6)
    torch.testing.assert_close(b_blocks, a_blocks, rtol=1e-6, atol=0)


# ---- In the Trainer ------------------------------------------------------------------------------

def train_params(**over) -> TrainParams:
    base = dict(learning_rate=1e-3, weight_decay=0.0, epochs=1, max_steps=3, batch_size=2, gradient_accumulation_steps=2,
                auto_batch_size=False, warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0, precision="fp32",
                gradient_checkpointing=False, eval_steps=0, early_stopping_patience=0, save_steps=100,
                save_total_limit=1, logging_steps=1, dataloader_workers=0, torch_compile=False, num_processes=1,
                accelerate_config=None)
    return TrainParams(**{**base, **over})


def run_trainer(tmp_path, chunked: bool):
    model = llama(tied=True)
    ids, labels = batch(n=12, seq=32)
    data = [{"input_ids": i.numpy(), "labels": l.numpy()} for i, l in zip(ids, labels)]
    args = trainer.training_arguments(train_params(), 0, tmp_path / ("c" if chunked else "p"))
    t = trainer.FiniteLossTrainer(model=model, args=args, train_dataset=data, data_collator=trainer.collate_blocks)
    t.chunked_lm_loss = chunked
    t.train()
    return t, [(h["loss"], h["grad_norm"]) for h in t.state.log_history if "loss" in h], model


def test_trainer_steps_with_accumulation_equal_the_plain_loss(tmp_path):
    """3 optimizer steps of 2 accumulated micro-batches with -100 labels: the same logged losses and gradient
    norms (which see a wrong normalisation that AdamW's scale-free update would hide), and the same weights
    (AdamW turns ~1e-7 gradient differences on near-zero gradients into up to ~5e-6: atol 1e-5)."""
    (tp, logs_p, model_p), (tc, logs_c, model_c) = run_trainer(tmp_path, False), run_trainer(tmp_path, True)
    assert (tp.lm_loss(), tc.lm_loss()) == ("plain", "chunked")
    assert len(logs_c) == 3 and np.allclose(logs_c, logs_p, rtol=1e-5, atol=0), (logs_c, logs_p)
    for (name, a), b in zip(model_p.named_parameters(), model_c.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
