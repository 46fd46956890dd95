"""The tiny end-to-end setting: a 2-layer GPT-2 from config with GPT-2's real BPE, on fixture text.

Its own module, without pytest, so that bench/gpu_check.py (run where pytest is not installed) uses the same
setting as the tests (tests/conftest.py).
"""
TINY = {
    "model": {"source": "gpt2_config", "gpt2": {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 128}},
    "data": {"source": "files", "train_file": "tests/fixtures/sotu_small/train.txt",
             "validation_file": "tests/fixtures/sotu_small/valid.txt"},
    "chunk": {"block_size": 64, "max_train_blocks": 0, "max_validation_blocks": 0},
    "train": {"max_steps": 8, "batch_size": 4, "save_steps": 4, "logging_steps": 1, "learning_rate": 1.0e-3},
    "evaluate": {"batch_size": 8},
    "generate": {"max_new_tokens": 8},
    # No harness tasks: its stages then skip in ~1 s each instead of ~6 s of CPU (lm-eval's import and set-up),
    # in every tiny pipeline the tests run; tests/test_harness_e2e.py turns the held-out task on, in windows as
    # long as the blocks.
    "harness": {"tasks": [], "limit": 2, "max_length": 64},
}
