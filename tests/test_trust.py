"""Trust: crash-safe training, stale-checkpoint safety, NaN stops, atomic outputs, determinism, team flow.

The slow tests work on copies of the shared tiny `dvc repro` (conftest `tiny_repro`), so each one starts
from a complete, consistent set of outputs and none changes what another sees.
"""
import json
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import ROOT, Repo
from lmtune.train import checkpoints, trainer
from repo_tools import copy_repo, kill_when, leftovers, python_stage, tree_hashes

METRIC_FILES = ("metrics/train.json", "metrics/eval.json")


@pytest.fixture
def work(tiny_repro, tmp_path):
    """A private copy of the reproduced tiny pipeline."""
    return copy_repo(tiny_repro, tmp_path / "work")


def read(repo, rel):
    return (repo.path / rel).read_bytes()


# --- Crash and resume -------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_after_first_checkpoint_then_repro_resumes_to_identical_results(work):
    """SIGKILL the train stage right after checkpoint-4 (of 8 steps): its outputs stay as they were;
    `dvc repro` then resumes from step 4 and ends byte-identical to the uninterrupted run."""
    before = tree_hashes(work.path)
    before_metrics = {f: read(work, f) for f in METRIC_FILES}
    assert json.loads(before_metrics["metrics/train.json"])["steps"] == 8
    ckpts = work.path / "models/checkpoints"
    assert not ckpts.exists()  # scratch: a finished run removes its checkpoints, so this run starts at step 0
    first = ckpts / "checkpoint-4" / "trainer_state.json"  # written last in a checkpoint
    killed = kill_when(work, python_stage("train"), first)
    assert killed.returncode == -9, f"train finished before the kill:\n{killed.stdout[-2000:]}"
    assert not (ckpts / "checkpoint-8" / "trainer_state.json").exists()
    # Nothing the stage owns changed: models/final, metrics/*, the dvclive curves are the old ones
    # (its unfinished temp dirs sit beside them, to be swept by the next run).
    assert tree_hashes(work.path, temps=False) == before
    assert (work.path / "models/train-in-progress.json").is_file()  # the killed run's marker
    # Killed outside DVC, the stage left every DVC-tracked file as it was (its checkpoints are scratch), so a
    # plain `dvc repro` has nothing to do: force the train stage alone. (Killed under `dvc repro`, which
    # removes the outputs first, a plain `dvc repro` reruns it: tests/test_memory.py.)
    out = work.dvc("repro", "--force", "--single-item", "train").stdout
    assert "Running stage 'train'" in out, out
    assert "did not finish" in out and re.search(r"resuming from \S*checkpoint-4\b", out), out
    assert not (work.path / "models/train-in-progress.json").exists()
    assert json.loads(read(work, "metrics/train_timing.json"))["resumed_from_step"] == 4
    # Exactly equal on CPU: same model bytes, same metrics files (evaluate is skipped as its deps match).
    for f in METRIC_FILES:
        assert read(work, f) == before_metrics[f], f
    # ... and the same model bytes and training curves (rebuilt from the checkpoint's log history).
    after = tree_hashes(work.path)
    for prefix in ("models/final/", "metrics/train/"):
        same = {k: v for k, v in after.items() if k.startswith(prefix)}
        assert same and same == {k: v for k, v in before.items() if k.startswith(prefix)}, prefix
    assert "up to date" in work.dvc("status").stdout
    assert leftovers(work.path) == []  # the killed run's temp dirs were swept


def _checkpoint(ckpts, step, max_steps=8, complete=True):
    d = ckpts / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    return d


def test_resumable_checkpoint_rules(tmp_path, capsys):
    ckpts = tmp_path / "checkpoints"
    _checkpoint(ckpts, 4)
    (ckpts / checkpoints.FINGERPRINT).write_text(json.dumps({"fingerprint": "old"}))
    # Different params or data: discarded with a message, never resumed.
    assert checkpoints.resumable_checkpoint(ckpts, "new") is None
    assert "discarding checkpoints" in capsys.readouterr().out and not ckpts.exists()
    # Same fingerprint: the newest complete checkpoint; a half-written newer one (killed mid-save) is removed.
    _checkpoint(ckpts, 4)
    _checkpoint(ckpts, 8, complete=False)
    (ckpts / checkpoints.FINGERPRINT).write_text(json.dumps({"fingerprint": "same"}))
    assert checkpoints.resumable_checkpoint(ckpts, "same").endswith("checkpoint-4")
    assert not (ckpts / "checkpoint-8").exists()
    # A checkpoint that already reached max_steps is not resumed (the Trainer would run a step too many).
    _checkpoint(ckpts, 8)
    assert checkpoints.resumable_checkpoint(ckpts, "same") is None and not ckpts.exists()
    # No stamp (e.g. a folder from another tool): discarded.
    _checkpoint(ckpts, 4)
    assert checkpoints.resumable_checkpoint(ckpts, "same") is None and not ckpts.exists()


def test_curves_come_from_the_log_history_at_global_steps(tmp_path):
    history = [{"loss": 3.0, "epoch": 0.1, "step": 1}, {"loss": 2.0, "epoch": 0.2, "step": 5},
               {"eval_loss": 2.5, "step": 5}, {"train_runtime": 1.2, "train_loss": 2.5, "epoch": 0.2, "step": 5}]
    trainer.write_curves(history, tmp_path / "live")
    assert (tmp_path / "live/plots/metrics/loss.tsv").read_text().split() == ["step", "loss", "1", "3.0", "5", "2.0"]
    assert (tmp_path / "live/plots/metrics/eval/loss.tsv").read_text().split() == ["step", "loss", "5", "2.5"]
    assert not list((tmp_path / "live").rglob("*runtime*"))  # wall clock stays out of the tracked curves


def test_mean_logged_loss_is_step_weighted_and_survives_resume():
    history = [{"loss": 4.0, "step": 1}, {"loss": 2.0, "step": 3}, {"eval_loss": 9.0, "step": 3}, {"loss": 1.0, "step": 4}]
    assert trainer.mean_logged_loss(history) == pytest.approx((4 + 2 * 2 + 1) / 4)


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_writes_nothing(work):
    """A learning rate of 1e6 blows the weights up: step 2 applies it, step 3's loss is NaN."""
    before = tree_hashes(work.path)
    work.set_params({"train": {"learning_rate": 1.0e6}})
    proc = work.stage("train", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[-1]] and proc.stderr.rstrip().endswith(errors[-1]), proc.stderr[-3000:]
    assert re.fullmatch(r"error: training loss became (nan|inf|-inf) at step 3 .*train\.learning_rate.*", errors[0]), errors
    assert "Traceback" not in proc.stderr
    assert tree_hashes(work.path) == before  # models/final, metrics/*.json, metrics/train untouched
    assert leftovers(work.path) == []


# --- Atomic outputs -----------------------------------------------------------------------------------

KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from lmtune.io import atomic_dir, atomic_write_json
    root = Path(sys.argv[1])
    if sys.argv[2] == "dir":
        with atomic_dir(root / "out") as tmp:
            (tmp / "part.bin").write_bytes(b"new" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    else:
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die just before the rename
        atomic_write_json(root / "m.json", {"new": 1})
""")


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_sigkill_mid_write_leaves_previous_output(tmp_path, kind):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.bin").write_bytes(b"old")
    (tmp_path / "m.json").write_text('{"old": 1}\n')
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(tmp_path), kind], cwd=ROOT)
    assert proc.returncode == -9
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["old.bin"]
    assert (tmp_path / "out" / "old.bin").read_bytes() == b"old"
    assert (tmp_path / "m.json").read_text() == '{"old": 1}\n'
    # The next write sweeps what the killed one left beside its target.
    from lmtune.io import atomic_dir

    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.bin").write_bytes(b"new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.bin"]
    assert not list(tmp_path.glob(".out.*"))


def test_kill_between_the_two_renames_restores_the_previous_output(tmp_path):
    """replace_dir moves the old output aside, then the new one in; a kill in between is undone."""
    from lmtune.io import sweep_temps

    (tmp_path / ".out.old-123").mkdir()
    (tmp_path / ".out.old-123" / "old.bin").write_bytes(b"old")
    (tmp_path / ".out.tmp-abc").mkdir()  # the finished new output that never got renamed
    sweep_temps(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "old.bin").read_bytes() == b"old"


@pytest.mark.slow
def test_every_stage_commits_its_outputs_whole_whichever_rename_fails(tiny_repro, tmp_path):
    """Each dvc.yaml stage, run with the renames onto its outputs intercepted (tests/stage_faults.py):
    - the n-th of them failing, for every n the stage makes: the stage stops, no temp is left, and every
      output is entirely old or entirely new, and all of a stage's outputs alike; train's four outputs (model, curves, metrics, timing) are
      committed together, so for train every one of them is old;
    - all of them skipped: the stage runs to its end without touching an output in place, and renamed
      something onto each output it declares, which is what it would have written: byte-identical to the
      output already there (stages are deterministic; only the wall-clock timing file differs)."""
    repo = copy_repo(tiny_repro, tmp_path / "repo")
    proc = repo.run(sys.executable, str(ROOT / "tests/stage_faults.py"))
    report = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("REPORT "))[len("REPORT "):])
    assert set(report) == set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    for name, r in report.items():
        skipped, *refused, finished = r["swallow"], *r["refuse"]
        assert skipped["result"] == "finished" and skipped["changed"] == [], (name, skipped)
        assert skipped["committed"] == skipped["outputs"], (name, skipped)
        assert set(skipped["differs"]) <= {"metrics/train_timing.json"}, (name, skipped)
        # At least one rename per output (a stage that wrote one in place would have none to refuse).
        assert len(refused) >= len(skipped["outputs"]), (name, r["refuse"])
        for failed in refused:
            assert failed["result"] == "refused" and failed["temps"] == [], (name, failed)
            assert set(failed["outputs"].values()) <= {"old", "new"}, (name, failed)
            # a stage's outputs are committed as a group: all old or all new, never a new one beside old ones
            assert len(set(failed["outputs"].values())) == 1, (name, failed)
            if name == "train":
                assert set(failed["outputs"].values()) == {"old"}, failed
        assert finished["result"] == "finished" and finished["n"] == finished["renames"] + 1, (name, finished)
        assert set(finished["outputs"].values()) == {"new"}, (name, finished)


def test_replace_dir_puts_the_previous_output_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    import os

    from lmtune import io

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.bin").write_bytes(b"old")
    (tmp_path / ".out.tmp-x").mkdir()
    (tmp_path / ".out.tmp-x" / "new.bin").write_bytes(b"new")
    real = os.replace

    def fail_onto_target(src, dst):
        if (str(src), str(dst)) == (str(tmp_path / ".out.tmp-x"), str(tmp_path / "out")):
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", fail_onto_target)
    with pytest.raises(OSError, match="disk full"):
        io.replace_dir(tmp_path / ".out.tmp-x", tmp_path / "out")
    assert (tmp_path / "out" / "old.bin").read_bytes() == b"old" and not list(tmp_path.glob(".out.old-*"))


# --- Reproducibility ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_params_and_seed_twice_give_byte_identical_metrics(work):
    """Train and evaluate again from step 0 with the same params and seed: metrics/*.json are byte-identical,
    and so are the model and the curves. Wall-clock numbers live only in metrics/train_timing.json."""
    first = {f: read(work, f) for f in METRIC_FILES}
    before = tree_hashes(work.path, skip=())
    assert not (work.path / "models/checkpoints").exists()  # scratch, removed after success: a full second run
    for f in METRIC_FILES:
        (work.path / f).unlink()
    work.stage("train")
    work.stage("evaluate")
    assert json.loads(read(work, "metrics/train_timing.json"))["resumed_from_step"] == 0
    for f in METRIC_FILES:
        assert read(work, f) == first[f], f
    # The model and the curves are the same bytes too.
    after = tree_hashes(work.path, skip=())
    for prefix in ("models/final/", "metrics/train/"):
        pick = lambda h: {k: v for k, v in h.items() if k.startswith(prefix)}  # noqa: E731
        assert pick(after) and pick(after) == pick(before), prefix
    assert not (work.path / "models/checkpoints").exists()
    # Trained by hand in a git + DVC repo, outside DVC: dvclive saved no DVC experiment (its default would).
    assert work.run("git", "for-each-ref", "refs/exps").stdout == ""
    timing = json.loads(read(work, "metrics/train_timing.json"))
    assert {"wall_time_s", "tokens_per_second", "peak_memory_mb"} <= set(timing)
    assert not {"wall_time_s", "tokens_per_second", "train_runtime", "peak_memory_mb"} & set(json.loads(first["metrics/train.json"]))


def test_saved_datasets_get_content_fingerprints(tmp_path):
    """Two saves of the same rows are byte-identical (datasets' own fingerprint is random per run)."""
    import datasets

    from lmtune.io import atomic_dir, save_dataset

    for name in ("a", "b"):
        ds = datasets.Dataset.from_dict({"text": ["x", "y"]})
        with atomic_dir(tmp_path / name) as tmp:
            save_dataset(datasets.DatasetDict(train=ds), tmp)
    assert tree_hashes(tmp_path, tops=("a",)) == {k.replace("b/", "a/", 1): v for k, v in tree_hashes(tmp_path, tops=("b",)).items()}
    assert datasets.load_from_disk(tmp_path / "a")["train"]["text"] == ["x", "y"]


@pytest.mark.slow
def test_team_flow_push_clone_pull_is_a_noop(work, tmp_path):
    """repro -> dvc push to a local-folder remote -> fresh git clone -> dvc pull -> repro does nothing."""
    remote = tmp_path / "remote"
    work.dvc("remote", "add", "-d", "team", str(remote))
    work.commit("pipeline run")
    work.dvc("push")
    assert any(remote.rglob("*")), "nothing was pushed"
    clone_dir = tmp_path / "clone"
    work.run("git", "clone", "-q", str(work.path), str(clone_dir))
    clone = Repo(clone_dir)
    assert not (clone_dir / "models/final").exists()  # only git content so far
    clone.dvc("pull")
    assert tree_hashes(clone_dir, skip=()) == tree_hashes(work.path, skip=())  # every data, model and metrics file
    out = clone.dvc("repro").stdout
    assert "Running stage" not in out, out
    for stage in ("download", "flatten", "tokenize", "chunk", "train", "evaluate", "export"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    assert clone.dvc("metrics", "diff").stdout.strip() == ""
    assert clone.dvc("metrics", "diff", "--json").stdout.strip() in ("{}", "")
    assert clone.run("git", "status", "--porcelain").stdout.strip() == ""


@pytest.mark.slow
def test_model_card_records_lock_hashes(tiny_repro):
    card = (tiny_repro.path / "models/export/README.md").read_text()
    lock = yaml.safe_load((tiny_repro.path / "dvc.lock").read_text())["stages"]
    outs = {o["path"]: o["md5"] for o in lock["download"]["outs"]}
    assert set(outs) == {"data/raw", "models/base"}
    for path, md5 in outs.items():
        assert re.search(rf"`{re.escape(path)}`.*`{md5}`", card), (path, md5)
