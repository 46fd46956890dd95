"""`make mutation`: mutmut over the core pure modules against the fast unit tests; scores in tests/MUTATION.md.

mutmut's own settings (the files it may mutate, the fast test files it runs, `-m "not slow"`) are in
setup.cfg [mutmut]. This script runs one group of modules at a time (the machine is shared), reads each
mutant's result from mutmut's `mutants/**/*.meta` files, and writes the killed fraction per module and
every surviving mutant, with the reason when it is equivalent (EQUIVALENT below).

    python tests/mutation.py                 # every group, one at a time
    python tests/mutation.py chunking        # one group; the other modules' rows come from earlier runs
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

# training.py: the pure parts only. train() and FiniteLossTrainer.training_step drive a whole Trainer run
# (the slow end-to-end and trust tests cover them); peak_memory_mb reads the process's own usage.
TRAINING_PURE = ["precision_flags", "optimizer_name", "training_arguments", "collate_blocks", "fingerprint",
                 "with_world_size", "complete_checkpoint", "_stamp", "resumable_checkpoint", "mean_logged_loss",
                 "write_curves"]
GROUPS = {
    "chunking": ["lmtune.chunking.*"],
    "tasks": ["lmtune.tasks.*"],
    "metrics": ["lmtune.metrics.*"],
    "training": [f"lmtune.training.x_{f}__mutmut_*" for f in TRAINING_PURE],
    "params": ["lmtune.params.*"],
}
# Statuses mutmut gives (mutmut.stats.status_by_exit_code): a mutant is killed when a test failed on it,
# or when it hung (timeout) or crashed the interpreter (segfault); "no tests" means no selected test ran it.
DETECTED = {"killed", "timeout", "segfault"}

# Surviving mutants that are equivalent: (a piece of the mutated line, so a renumbered mutant shows up as
# unexplained instead of carrying a stale reason, and why no test can tell it from the original).
EQUIVALENT: dict[str, tuple[str, str]] = {
    "lmtune.chunking.x_blocks_table__mutmut_6": (
        "reshape(-2)", "numpy (2.4) reads any negative size as 'infer': reshape(-2) is reshape(-1)"),
    "lmtune.chunking.x_sample_blocks__mutmut_9": (
        "replace=None", "Generator.choice tests `if replace`: None samples without replacement, as False does"),
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
    if name.startswith("lmtune.training."):
        return any(name.startswith(f"lmtune.training.x_{f}__mutmut_") for f in TRAINING_PURE)
    return True


def results() -> dict[str, dict[str, str]]:
    """{module path: {mutant name: status}} from mutmut's result files."""
    status_by_exit_code = status_names()
    out = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = meta.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = {k: status_by_exit_code[v] for k, v in codes.items() if in_scope(k)}
        out[module] = {k: s for k, s in statuses.items() if s != "not checked"}  # modules of groups not run yet
    return {m: r for m, r in out.items() if r}


def diff(name: str) -> str:
    """The mutated lines (`-` original, `+` mutant) as mutmut shows them."""
    text = subprocess.run([str(MUTMUT), "show", name], cwd=ROOT, capture_output=True, text=True).stdout
    return "\n".join(l for l in text.splitlines() if l[:1] in "-+" and not l.startswith(("---", "+++")))


def report(res: dict[str, dict[str, str]], timings: dict[str, float]) -> str:
    lines = ["# Mutation testing", "",
             "`make mutation` (tests/mutation.py): mutmut 3.8.1 over the core pure modules, each mutant run against the",
             "fast unit tests that cover the mutated function (setup.cfg [mutmut]). Killed = a test failed (or the",
             "mutant hung or crashed); the target is >= 85% per module, and every survivor is listed below.", "",
             "| module | mutants | killed | survived | no test ran it | score |", "|---|---|---|---|---|---|"]
    survivors = []
    for module, statuses in res.items():
        n = len(statuses)
        killed = sum(s in DETECTED for s in statuses.values())
        no_tests = sum(s == "no tests" for s in statuses.values())
        lines.append(f"| `{module}` | {n} | {killed} | {n - killed - no_tests} | {no_tests} | {killed / n:.1%} |")
        survivors += [(module, name, s) for name, s in sorted(statuses.items()) if s not in DETECTED]
    if timings:
        lines += ["", "Run time of the groups in the last run (2 shared cores): "
                  + ", ".join(f"{g} {t:.0f} s" for g, t in timings.items()) + "."]
    lines += ["", "## Surviving mutants", ""]
    if not survivors:
        lines.append("None.")
    for module, name, status in survivors:
        d = diff(name)
        snippet, reason = EQUIVALENT.get(name, ("", ""))
        why = (f"equivalent: {reason}" if reason and snippet in d
               else "**not explained** (reason recorded for another mutation)" if reason else "**not explained**")
        lines += [f"- `{name}` ({status}): {why}", "", "  ```diff", *[f"  {l}" for l in d.splitlines()], "  ```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    groups = sys.argv[1:] or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        sys.exit(f"unknown group(s) {unknown}; known: {list(GROUPS)}")
    timings = {}
    for g in groups:
        print(f"mutation: {g} ...", flush=True)
        timings[g] = run_group(GROUPS[g], children=int(os.environ.get("MUTATION_CHILDREN", "1")))
    res = results()
    RESULTS.write_text(report(res, timings))
    for module, statuses in res.items():
        killed = sum(s in DETECTED for s in statuses.values())
        print(f"{module}: {killed}/{len(statuses)} killed ({killed / len(statuses):.1%})")
    print(f"mutation: wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
