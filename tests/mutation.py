"""`make mutation`: mutmut over the core pure modules against the fast unit tests; scores in tests/MUTATION.md.

mutmut's own settings (the files it may mutate, the fast test files it runs, `-m "not slow"`) are in
setup.cfg [mutmut]. This script runs one group of modules at a time (the machine is shared), reads each
mutant's result from mutmut's `mutants/**/*.meta` files, and writes the killed fraction per module and
every surviving mutant, with the reason when it is equivalent (EQUIVALENT below).

    python tests/mutation.py                 # every group, one at a time
    python tests/mutation.py chunking        # one group; the other modules' rows come from earlier runs
    python tests/mutation.py --report        # rewrite tests/MUTATION.md from the stored results only
    python tests/mutation.py --survivors io  # rerun only the group's mutants no test has killed yet (after
                                             # adding tests; the group's run time stays that of its full run)
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).parent / "mutmut"
RESULTS = ROOT / "tests" / "MUTATION.md"
TIMINGS = ROOT / "mutants" / "mutation-timings.json"  # seconds per group, from the run that produced its results

# Modules mutated only in part: the functions a fast unit test can call (x_NAME for a function, xǁCLASSǁNAME for a
# method), each list with why the rest is left out. Any other module in a group counts every mutant.
PARTS = {
    # train() and FiniteLossTrainer drive a whole Trainer run (the slow end-to-end and trust tests cover them);
    # peak_memory_mb reads the process's own usage.
    "lmtune.train.trainer": ["precision_flags", "optimizer_name", "checkpointing_flag", "training_arguments",
                             "collate_blocks", "mean_logged_loss", "write_curves"],
    # All but StampOnSave (a Trainer callback, covered through the Trainer in tests/test_memory.py).
    "lmtune.train.checkpoints": ["identity", "fingerprint", "superseded", "complete_checkpoint", "_stamp_record",
                                 "_stamp", "changed_inputs", "resumable_checkpoint"],
    # preflight profiles a whole model at the configured shape (the slow preflight tests in tests/test_memory.py).
    "lmtune.train.plan": ["largest_fitting_divisor", "xǁPlanǁchoice", "xǁPlanǁrecord", "decide", "agree"],
    # die_with_launcher arms a parent-death SIGKILL for the calling process: only a launched process calls it
    # (tests/test_distributed.py's slow runs).
    "lmtune.train.launch": ["launch_args", "launched", "check_world_size", "relaunch"],
    # evaluate loads the base or tuned model from the pipeline's paths (the slow end-to-end tests).
    "lmtune.eval.evaluation": ["unit_ids", "confusion_csv", "blocks_csv", "read_blocks", "same_blocks"],
}


# Left out of a group's count, each with why (mutant-name prefixes).
EXCLUDED = {
    "lmtune.tasks.chat.": ("not measured yet: its fast tests (tests/test_task_chat.py) load the SmolLM2 tokenizer, "
                           "~15 s of fixture setup in each mutant's run (383 mutants: ~1.5 h here), and adding them to "
                           "setup.cfg's test set resets every stored result"),
}


def _patterns(module: str) -> list[str]:
    names = PARTS.get(module)
    if names is None:
        return [f"{module}.*"]
    return [f"{module}.{n if n.startswith('xǁ') else 'x_' + n}__mutmut_*" for n in names]


GROUPS = {
    "chunking": _patterns("lmtune.data.chunking"),
    "tasks": _patterns("lmtune.tasks"),
    "metrics": _patterns("lmtune.eval.metrics"),
    "training": _patterns("lmtune.train.trainer"),
    "checkpoints": _patterns("lmtune.train.checkpoints"),
    "params": _patterns("lmtune.params"),
    "stats": _patterns("lmtune.stats"),
    "io": _patterns("lmtune.io"),
    "estimate": _patterns("lmtune.train.estimate"),
    "limits": _patterns("lmtune.train.limits"),
    "plan": _patterns("lmtune.train.plan"),
    "launch": _patterns("lmtune.train.launch"),
    "blocks_csv": _patterns("lmtune.eval.evaluation"),
    "card": [*_patterns("lmtune.report.card"), *_patterns("lmtune.report.metrics")],
}
# Statuses mutmut gives (mutmut.stats.status_by_exit_code): a mutant is killed when a test failed on it,
# or when it hung (timeout) or crashed the interpreter (segfault); "no tests" means no selected test ran it.
DETECTED = {"killed", "timeout", "segfault"}

# Mutants recorded as timeouts, and what a run outside mutmut's forked worker showed (a timeout counts as killed).
FORK_HANG = ("outside the forked worker (MUTANT_UNDER_TEST set, plain pytest) "
             "test_progress_bar_only_on_a_terminal_and_only_with_a_description fails on it in seconds; in the fork "
             "the tqdm bar hangs until the wall-clock limit")
TIMEOUTS = {
    **{f"lmtune.eval.metrics.x__progress__mutmut_{i}": FORK_HANG for i in range(7, 14)},
    "lmtune.stats.x__bootstrap__mutmut_20": (
        "range step 1: 2,000 overlapping chunks of 250 resamples instead of 8; test_bootstrap_draws_as_specified fails "
        "on it outside the fork"),
    "lmtune.train.checkpoints.x_superseded__mutmut_4": (
        "returns True for every stamp; test_superseded_leaves_out_what_the_preflight_and_the_launcher_decide fails on "
        "it outside the fork (the worker ran past its limit on the loaded machine)"),
}
# Surviving mutants that are equivalent: (a piece of the mutated line, so a renumbered mutant shows up as
# unexplained instead of carrying a stale reason, and why no test can tell it from the original).
RESHAPE = "numpy (2.4) reads any negative size as 'infer': reshape(-2) is reshape(-1)"
ONLY_IDS = "only `input_ids` is read from the tokenizer's output, with or without an attention mask"
ASCII_STAMP = ("fingerprint.json (lmtune.io.atomic_write_json) and trainer_state.json (the Trainer's json.dumps) "
               "escape every non-ASCII character: they read the same in any locale's encoding")
STATE = "trainer_state.json always holds global_step and max_steps (the Trainer writes both): the defaults never apply"
GREATER = ("with load_best_model_at_end and a metric ending in 'loss', TrainingArguments sets greater_is_better "
           "False itself")
INT_COUNT = "a float32 count of correct tokens is exact below 2**24 and int() reads it back the same"
TWO_D = "the rows here are 2-D (rows x vocabulary or labels): dim +1 is dim -1"
RIGHT_PAD = ("padding is on the right and causal attention only looks left: real positions never see the pads, "
             "and padded positions are not scored (their labels come from the collate's mask)")
RIGHT_PAD_CLF = ("padding is on the right and causal attention only looks left; the classifier reads the last "
                 "non-pad position, which never sees the pads")
HEAD_PATHS = ("the chunked LM head and the whole logits give the same numbers (the per-item blocks test runs both "
              "paths); what differs is the peak memory, which no fast test measures")
PACKED = ("only packed rows (lmtune.data.packing) carry position_ids, and only for them does the KV cache matter "
          "(it turns transformers' packed-row detection off); tests/test_packing.py scores packed rows but is not in "
          "mutmut's test set (adding a file resets every stored result)")
ON_CPU = ("the fast tests run on the CPU, where every tensor already is; bench/gpu_check.py evaluates on CUDA "
          "(bench/GPU_RESULTS.md)")
FLOAT_NONE = "astype(None) converts to float64, as astype(float) does"
INT_EXACT = ("np.asarray without a dtype keeps an int or bool input as it is: its sums, and its products with the "
             "float resampling weights, are exact below 2**53, so every float that follows is the same")
INTEGERS_LOW = "Generator.integers(k, size=...) draws from [0, k) (high=None), the same stream as integers(0, k, ...)"
FALSY = "paired only feeds `if paired`: None is as false as False"
INT64 = ("numpy 2's default integer on 64-bit Linux is int64, the dtype asked for (and cumsum sums smaller ints in it "
         "too)")
CODEC = "codec names are case-insensitive: 'UTF-8' is 'utf-8'"
ASCII_JSON = ("the text is json.dumps output, which escapes every non-ASCII character (ensure_ascii): the same bytes "
              "in any locale's encoding")
SORTED_STATE = ("state.json's keys are already in sorted order (datasets writes it with sort_keys, and `_fingerprint` "
                "is one of its keys), so dumping them in read order sorts them too")
SORTED_LITERAL = "the state dict literal is written in sorted key order, so sort_keys changes nothing"
KERNEL_TEXT = "/proc and cgroup files are ASCII text the kernel writes: the same in any locale's encoding"
UNSET_OR = ("a missing variable gives None or the default string; `or` turns both into the same number (only a "
            "variable set but empty tells the two apart, and gives the `or` value either way)")
NUMBERS_CSV = ("a blocks csv holds only numbers (ASCII) on `\\n`-ended lines that blocks_csv wrote: any encoding, "
               "and universal newlines, read them the same (newline='' matters only inside quoted fields)")
READ_SIZE = "xxh3 streams: the same bytes hash the same whatever the read size or buffering"
ON_CPU_COUNT = ("the fast tests count on the CPU, torch's default device for a tensor without one; the CUDA count "
                "(device='cuda') runs in bench/gpu_check.py")
EQUIVALENT: dict[str, tuple[str, str]] = {
    **{f"lmtune.io.x_files_fingerprint__mutmut_{i}": (s, READ_SIZE) for i, s in ((4, "2 << 20"), (5, "1 << 21"), (26, '"rb", )'))},
    **{f"lmtune.io.x_save_dataset__mutmut_{i}": ("encoding", ASCII_JSON) for i in (9, 22, 24)},
    **{f"lmtune.io.x_save_dataset__mutmut_{i}": ("UTF-8", CODEC) for i in (11, 34)},
    **{f"lmtune.io.x_save_dataset__mutmut_{i}": ("sort_keys", SORTED_STATE) for i in (27, 30, 32)},
    **{f"lmtune.io.x_save_tables__mutmut_{i}": ("encoding", ASCII_JSON) for i in (44, 46, 80, 82, 98, 100)},
    **{f"lmtune.io.x_save_tables__mutmut_{i}": ("UTF-8", CODEC) for i in (57, 96, 109)},
    **{f"lmtune.io.x_save_tables__mutmut_{i}": ("sort_keys", SORTED_LITERAL) for i in (89, 92, 94)},
    **{f"lmtune.io.x_write_json__mutmut_{i}": ("encoding", ASCII_JSON) for i in (2, 4)},
    "lmtune.io.x_write_json__mutmut_17": ("UTF-8", CODEC),
    "lmtune.io.x_atomic_write_text__mutmut_7": ("UTF-8", CODEC),
    "lmtune.io.x__umask__mutmut_3": (
        "os.umask(1)", "the probe's value is put back at once: os.umask returns the mask before it whatever it sets"),
    **{f"lmtune.io.x_atomic_write_bytes__mutmut_{i}": (
        "missing_ok", "only a failure before or in os.replace gets here, and mkstemp's file is still there then")
       for i in (33, 35)},
    **{f"lmtune.train.limits.x__proc_status_kb__mutmut_{i}": ("encoding", KERNEL_TEXT) for i in (1, 3)},
    **{f"lmtune.train.limits.x__read_int__mutmut_{i}": ("encoding", KERNEL_TEXT) for i in (2, 4)},
    **{f"lmtune.train.limits.x__stat__mutmut_{i}": ("encoding", KERNEL_TEXT) for i in (1, 3)},
    **{f"lmtune.train.limits.x_process_limit__mutmut_{i}": ("encoding", KERNEL_TEXT) for i in (35, 40, 42, 47)},
    "lmtune.train.limits.x__stat__mutmut_6": (
        "rpartition", "memory.stat lines are `key value`, one space: partition and rpartition split them the same"),
    "lmtune.train.limits.x_cgroup_rooms__mutmut_86": (
        "group == mount and", "group is the mount or below it, so `mount not in group.parents` holds exactly when "
        "group == mount: `and` and `or` decide the same"),
    **{f"lmtune.train.limits.x_process_limit__mutmut_{i}": ("environ.get", UNSET_OR) for i in (15, 17, 58, 60)},
    "lmtune.train.estimate.x_saved_bytes__mutmut_26": (
        "[1] * len", "each layer's forward pre-hook overwrites its entry (every layer runs in the forward pass)"),
    "lmtune.train.estimate.x_saved_bytes__mutmut_72": (
        "lambda t: None", "no backward pass runs in the count: the unpack hook is never called"),
    "lmtune.train.estimate.x_saved_bytes__mutmut_76": ("None", "torch's functional_call turns args=None into ()"),
    **{f"lmtune.train.estimate.x_saved_bytes__mutmut_{i}": (
        "strict", "the state holds every parameter and buffer by name, so a strict call finds none missing")
       for i in (78, 83, 84)},
    "lmtune.train.estimate.x_profile__mutmut_18": ("shape[+1]", "input_ids is 2-D (batch x block): dim +1 is dim -1"),
    **{f"lmtune.eval.evaluation.x_read_blocks__mutmut_{i}": ("newline", NUMBERS_CSV) for i in (3, 6)},
    **{f"lmtune.eval.evaluation.x_read_blocks__mutmut_{i}": ("encoding", NUMBERS_CSV) for i in (4, 7)},
    "lmtune.eval.evaluation.x_read_blocks__mutmut_10": ("UTF-8", CODEC),
    "lmtune.eval.evaluation.x_read_blocks__mutmut_21": (
        "XX.enXX", "no number csv writes (ints, repr floats, nan, inf) holds an X: the extra characters never match"),
    "lmtune.report.card.x_lock_outputs__mutmut_7": ("UTF-8", CODEC),
    "lmtune.report.card.x_model_card__mutmut_3": (
        "encoding", "metrics/eval.json and metrics/train.json are lmtune.io.write_json's: json.dumps escapes every "
        "non-ASCII character, so they read the same in any locale's encoding"),
    "lmtune.report.card.x_model_card__mutmut_5": ("UTF-8", CODEC),
    "lmtune.report.card.x_model_card__mutmut_104": (
        "sort_keys=None", "PyYAML's representer sorts only `if sort_keys`: None is as false as False"),
    "lmtune.train.plan.x_largest_fitting_divisor__mutmut_11": (
        "global_batch + 2", "global_batch + 1 never divides global_batch (>= 1): the extra candidate is never kept"),
    "lmtune.train.plan.x_decide__mutmut_74": (
        "or True", "with auto_batch_size decide refuses only when no divisor fits, so this search finds none either"),
    **{f"lmtune.train.estimate.x_saved_bytes__mutmut_{i}": (
        "torch.autocast(device,", "autocast's default dtype (bf16 on the CPU, fp16 on CUDA) and the ones the trainer "
        "passes (bf16, fp16) are all 2 bytes, cast by the same op lists: the same bytes are saved") for i in (64, 66)},
    "lmtune.stats.x__rows__mutmut_3": ("astype(None)", FLOAT_NONE),
    "lmtune.stats.xǁResamplingǁcounts__mutmut_14": ("astype(None)", FLOAT_NONE),
    **{f"lmtune.stats.x__rows__mutmut_{i}": ("np.asarray(r,", INT_EXACT) for i in (7, 9, 11, 13)},
    **{f"lmtune.stats.x_mean_spread__mutmut_{i}": ("np.asarray(values,", INT_EXACT) for i in (3, 5)},
    "lmtune.stats.x__seed_draws__mutmut_13": ("rng.integers(k,", INTEGERS_LOW),
    "lmtune.stats.xǁResamplingǁcounts__mutmut_7": ("rng.integers(e,", INTEGERS_LOW),
    "lmtune.stats.x__seed_draws__mutmut_7": (
        "np.zeros((n, 2)", "one seed drawn twice: the mean of two copies of its value is that value"),
    "lmtune.stats.x_compare__mutmut_40": (
        "low >= 0", "read only when low > 0 or high < 0: low == 0 with high < 0 cannot happen (low <= high)"),
    "lmtune.stats.xǁRatioǁ_resampled__mutmut_31": (
        "seed_draws, )", "numpy 2's take_along_axis defaults to axis -1, which is axis 1 of the 2-D [B, k] array"),
    "lmtune.stats.xǁRatioǁgroup__mutmut_22": (
        "members[1].transform", "the check above makes every member's transform the same as the first's"),
    "lmtune.stats.x_interval__mutmut_4": ("None", FALSY),
    "lmtune.stats.x_compare__mutmut_12": ("None", FALSY),
    "lmtune.stats.x__seed_draws__mutmut_1": (
        "and False", "one seed: integers(0, 1) is all zeros, returned without drawing from the generator (a range of "
        "one value), so every later draw is the same"),
    "lmtune.stats.x_interval__mutmut_22": ("None", FALSY),

    "lmtune.data.chunking.x_blocks_table__mutmut_6": ("reshape(-2)", RESHAPE),
    "lmtune.data.chunking.x_sample_blocks__mutmut_9": (
        "replace=None", "Generator.choice tests `if replace`: None samples without replacement, as False does"),
    "lmtune.data.chunking.x_document_lengths__mutmut_2": (
        "zero_copy_only=None", "pyarrow tests `if zero_copy_only`: None copies as False does"),
    **{f"lmtune.data.chunking.x_block_documents__mutmut_{i}": ("dtype", INT64) for i in (4, 6, 15, 17)},
    **{f"lmtune.data.chunking.x_concat_blocks__mutmut_{i}": ("np.arange(n,", INT64) for i in (73, 75)},
    "lmtune.params.x_read__mutmut_7": ("UTF-8", CODEC),
    **{f"lmtune.tasks.classification.xǁClassificationǁexamples__mutmut_{i}": (
        'cols["label"]', "the labels are Python ints (Arrow's to_pylist): numpy 2 makes them int64, the dtype asked for")
       for i in (17, 19)},
    **{f"lmtune.tasks.classification.xǁClassificationǁtokenize_batch__mutmut_{i}": ("return_attention_mask", ONLY_IDS)
       for i in (5, 8, 12)},
    "lmtune.tasks.instruction.xǁInstructionǁflatten_record__mutmut_4": (
        "or True", "record.get(None) is None: a record never has a None key, as when there is no context field"),
    **{f"lmtune.tasks.instruction.xǁInstructionǁtokenize_batch__mutmut_{i}": ("return_attention_mask", ONLY_IDS)
       for i in (5, 8, 12, 18, 21, 25)},
    **{f"lmtune.train.trainer.x_precision_flags__mutmut_{i}": (
        "fp32", "only bf16 and fp16 set a flag: any other name is fp32") for i in (13, 14)},
    **{f"lmtune.train.checkpoints.x_resumable_checkpoint__mutmut_{i}": ("state.get", STATE) for i in (17, 19, 22, 25, 27, 30)},
    "lmtune.train.checkpoints.x_superseded__mutmut_30": (
        "None", "comparable() sets world_size to None on both sides: the value passed never counts"),
    **{f"lmtune.train.checkpoints.x__stamp_record__mutmut_{i}": (s, c) for i, s, c in (
        (3, "encoding", ASCII_STAMP), (7, "UTF-8", CODEC))},
    **{f"lmtune.train.checkpoints.x_resumable_checkpoint__mutmut_{i}": (s, c) for i, s, c in (
        (9, "encoding", ASCII_STAMP), (15, "UTF-8", CODEC))},
    **{f"lmtune.train.trainer.x_training_arguments__mutmut_{i}": ("greater_is_better", GREATER) for i in (25, 59, 99)},
    "lmtune.train.trainer.x_training_arguments__mutmut_82": (
        "cpu_bf16_here(None)", "cpu_bf16_here reads `not cuda`: without CUDA None is as false as False, and with CUDA "
        "train_precision ignores cpu_bf16"),
    "lmtune.train.trainer.x_training_arguments__mutmut_54": ('save_strategy="steps"', "TrainingArguments' default is 'steps'"),
    "lmtune.train.trainer.x_training_arguments__mutmut_64": ('report_to="none"', "transformers 5's default report_to is 'none'"),
    "lmtune.train.trainer.x_write_curves__mutmut_6": ("report", "dvclive's default report is None"),
    **{f"lmtune.eval.metrics.x__loader__mutmut_{i}": ("shuffle", "DataLoader's shuffle defaults to False, and None is false")
       for i in (9, 13)},
    **{f"lmtune.eval.metrics.x_causal_lm_batch_stats__mutmut_{i}": (
        "rows", "the chunk size only changes how many rows one pass takes, not a number (each row's loss is its own)")
       for i in (13, 14, 19, 22)},
    **{f"lmtune.eval.metrics.x__rows_stats__mutmut_{i}": ("n_correct", INT_COUNT) for i in (24, 27)},
    "lmtune.eval.metrics.x__rows_stats__mutmut_46": ("cross_entropy", "torch's cross_entropy ignores -100 by default"),
    "lmtune.eval.metrics.x__rows_stats__mutmut_69": (
        "|", "an unscored row let in has target -100, which no argmax equals: it adds no correct prediction"),
    **{f"lmtune.eval.metrics.x__rows_stats__mutmut_{i}": ("+1", TWO_D) for i in (80, 86)},
    "lmtune.eval.metrics.x_evaluate_classifier__mutmut_23": ("+1", TWO_D),
    **{f"lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_{i}": ("F.pad", "each row's token and byte sums do not depend on "
       "where its -100 padding sits") for i in (107, 108)},
    "lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_1": ("pad_token_id", RIGHT_PAD),
    **{f"lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_{i}": ("attention_mask", RIGHT_PAD) for i in (46, 47)},
    **{f"lmtune.eval.metrics.x_evaluate_classifier__mutmut_{i}": ("attention_mask", RIGHT_PAD_CLF) for i in (13, 15, 18, 19, 20)},
    "lmtune.eval.metrics.x_token_byte_lengths__mutmut_29": ("char_bytes", "only membership in char_bytes is read, not its values"),
    **{f"lmtune.train.trainer.x_write_curves__mutmut_{i}": (
        "missing_ok", "dvclive always writes metrics.json on exit, so the file is there to remove") for i in (37, 42)},
}
# Surviving mutants that are not equivalent: what a test would need, and why the fast tests do not have it.
NOT_KILLED: dict[str, tuple[str, str]] = {
    **{f"lmtune.train.estimate.x_saved_bytes__mutmut_{i}": ("device", ON_CPU_COUNT) for i in (10, 13, 17, 20)},
    **{f"lmtune.train.estimate.x_profile__mutmut_{i}": ("None", ON_CPU_COUNT) for i in (23, 32)},
    **{f"lmtune.io.x_sweep_temps__mutmut_{i}": (
        "missing_ok", "tells only when a stale file vanishes between the glob and the unlink (another process "
        "removing it); DVC's lock keeps one run per target") for i in (21, 22)},
    **{f"lmtune.eval.metrics.x__run_eval__mutmut_{i}": ("device", ON_CPU) for i in (1, 11, 12, 13, 14)},
    "lmtune.eval.metrics.x_causal_lm_batch_stats__mutmut_29": ("None", ON_CPU),
    "lmtune.eval.metrics.x_causal_lm_hidden_stats__mutmut_21": ("None", ON_CPU),
    **{f"lmtune.eval.metrics.x__rows_stats__mutmut_{i}": ("device", ON_CPU) for i in (18, 21, 25, 28, 63, 66)},
    "lmtune.eval.metrics.x__rows_stats__mutmut_2": ("to(None)", ON_CPU),
    **{f"lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_{i}": ("device", ON_CPU) for i in (59, 62)},
    **{f"lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_{i}": ("head_parts", HEAD_PATHS) for i in (3, 4, 5, 6)},
    "lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_2": ("chunked", HEAD_PATHS),
    **{f"lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_{i}": ("position_ids", PACKED) for i in (48, 49, 50, 51, 52)},
    **{f"lmtune.eval.metrics.x_evaluate_causal_lm__mutmut_{i}": ("use_cache", PACKED) for i in (53, 54, 55)},
    **{f"lmtune.train.trainer.x_write_curves__mutmut_{i}": (
        "save_dvc_exp", "dvclive saves an experiment only inside a DVC repo outside `dvc exp run`; the unit test writes "
        "in a bare temp dir") for i in (2, 5, 8)},
}


def status_names() -> dict:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code


def run_group(patterns: list[str], children: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run([str(MUTMUT), "run", "--max-children", str(children), *patterns], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"mutmut run {' '.join(patterns)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def in_scope(name: str) -> bool:
    if any(name.startswith(prefix) for prefix in EXCLUDED):
        return False
    module = name.rsplit(".", 1)[0]
    return module not in PARTS or any(name.startswith(p.removesuffix("*")) for p in _patterns(module))


def results() -> dict[str, dict[str, str]]:
    """{module path: {mutant name: status}} from mutmut's result files."""
    status_by_exit_code = status_names()
    out = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = meta.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = {k: status_by_exit_code[v] for k, v in codes.items() if in_scope(k)}
        out[module] = statuses
    # A module none of whose mutants ran belongs to a group not run yet; one partly run keeps its "not checked".
    return {m: r for m, r in out.items() if any(s != "not checked" for s in r.values())}


def diff(name: str, module: str) -> str:
    """The mutated lines (`-` original, `+` mutant) as `mutmut show` gives them (its function, in this process:
    a `mutmut show` process per survivor takes seconds each)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        text = get_diff_for_mutant(name, path=module)
    finally:
        os.chdir(cwd)
    return "\n".join(l for l in text.splitlines() if l[:1] in "-+" and not l.startswith(("---", "+++")))


def report(res: dict[str, dict[str, str]], timings: dict[str, float]) -> str:
    lines = ["# Mutation testing", "",
             "`make mutation` (tests/mutation.py): mutmut 3.8.1 over the core pure modules, each mutant run against the",
             "fast unit tests that call the mutated function (mutmut's coverage map over the test files in setup.cfg",
             "[mutmut]). Killed = a test failed (or the mutant hung or crashed); the target is >= 85% per module, and",
             "every survivor is listed below: equivalent (no test can tell it from the original, and why), or not",
             "killed (what a test would need). After tests are added, `--survivors GROUP` reruns only what survived.",
             *[f"`{m.replace('.', '/')}.py` counts only {', '.join(f.replace('xǁ', '').replace('ǁ', '.') for f in fs)}."
               for m, fs in PARTS.items()],
             *[f"Left out: `{prefix.removesuffix('__mutmut_').rstrip('.').replace('.x_', '.')}`: {why}."
               for prefix, why in EXCLUDED.items()], "",
             "| module | mutants | killed | survived | no test ran it | score |", "|---|---|---|---|---|---|"]
    survivors = []
    partial = []
    for module, all_statuses in res.items():
        statuses = {k: s for k, s in all_statuses.items() if s != "not checked"}
        if len(statuses) < len(all_statuses):
            funcs = sorted({k.rsplit(".", 1)[1].split("__mutmut_")[0].removeprefix("x_").replace("xǁ", "").replace("ǁ", ".")
                            for k, st in all_statuses.items() if st == "not checked"})
            partial.append(f"`{module}` ({len(all_statuses) - len(statuses)} of {len(all_statuses)} mutants not run, in "
                           f"{', '.join(funcs)}: its group's run was stopped; the row counts the ones that ran)")
        n = len(statuses)
        killed = sum(s in DETECTED for s in statuses.values())
        no_tests = sum(s == "no tests" for s in statuses.values())
        lines.append(f"| `{module}` | {n} | {killed} | {n - killed - no_tests} | {no_tests} | {killed / n:.1%} |")
        survivors += [(module, name, s) for name, s in sorted(statuses.items()) if s not in DETECTED]
    if partial:
        lines += ["", "Partly run: " + "; ".join(partial) + "."]
    timeouts = sorted(name for statuses in res.values() for name, st in statuses.items() if st == "timeout")
    if timeouts:
        lines += ["", "Timeouts (counted as killed), each checked: "
                  + "; ".join(f"`{n}` ({TIMEOUTS.get(n, '**not checked**')})" for n in timeouts) + "."]
    if timings:
        lines += ["", "Run time of each group (one mutmut worker, 2 cores shared with other work): "
                  + ", ".join(f"{g} {t:.0f} s" for g, t in timings.items()) + "."]
    from fnmatch import fnmatchcase

    ran = {name for statuses in res.values() for name, st in statuses.items() if st != "not checked"}
    measured = {g for g in GROUPS if any(fnmatchcase(n, p) for n in ran for p in GROUPS[g])}
    untimed = [g for g in GROUPS if g not in timings and g in measured]
    missing = [g for g in GROUPS if g not in measured]
    if untimed:
        lines += ["", "No run time for " + ", ".join(f"`{g}`" for g in untimed)
                  + ": its results come from a stopped run and reruns of the rest, not one full run."]
    if missing:
        lines += ["", "Not measured yet: " + ", ".join(f"`{g}` (`python tests/mutation.py {g}`)" for g in missing) + "."]
    lines += ["", "## Surviving mutants", ""]
    if not survivors:
        lines.append("None.")
    for module, name, status in survivors:
        d = diff(name, module)
        kind, (snippet, reason) = next(((k, table[name]) for k, table in (("equivalent", EQUIVALENT),
                                                                      ("not killed", NOT_KILLED)) if name in table),
                                       ("", ("", "")))
        why = (f"{kind}: {reason}" if reason and snippet in d
               else "**not explained** (reason recorded for another mutation)" if reason else "**not explained**")
        lines += [f"- `{name}` ({status}): {why}", "", "  ```diff", *[f"  {l}" for l in d.splitlines()], "  ```", ""]
    return "\n".join(lines).rstrip() + "\n"


def survivors(patterns: list[str]) -> list[str]:
    """The group's mutants that no test has killed in an earlier run (survived, no tests, not run yet)."""
    from fnmatch import fnmatchcase

    res = results()
    return [name for statuses in res.values() for name, status in statuses.items()
            if status not in DETECTED and any(fnmatchcase(name, p) for p in patterns)]


def main() -> None:
    args = sys.argv[1:]
    only_survivors = "--survivors" in args
    args = [a for a in args if a != "--survivors"]
    groups = [] if args == ["--report"] else args or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        sys.exit(f"unknown group(s) {unknown}; known: {list(GROUPS)}")
    timings = json.loads(TIMINGS.read_text()) if TIMINGS.is_file() else {}
    children = int(os.environ.get("MUTATION_CHILDREN", "1"))
    for g in groups:
        print(f"mutation: {g} ...", flush=True)
        if only_survivors:
            names = survivors(GROUPS[g])
            print(f"mutation: {g}: rerunning {len(names)} survivors", flush=True)
            if names:
                run_group(names, children)
            continue
        timings[g] = run_group(GROUPS[g], children)
        TIMINGS.write_text(json.dumps(timings))
    res = results()
    RESULTS.write_text(report(res, timings))
    for module, statuses in res.items():
        ran = [s for s in statuses.values() if s != "not checked"]
        killed = sum(s in DETECTED for s in ran)
        print(f"{module}: {killed}/{len(ran)} killed ({killed / len(ran):.1%})")
    print(f"mutation: wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
