"""Team scale on real parts: an S3 remote, shared experiments, the run-cache.

One module, one S3-compatible server and one shared origin, to keep the end-to-end cost to one tiny
`dvc repro` (conftest `tiny_repro`) plus two experiments:
- the server is moto's standalone one (`ThreadedMotoServer`, what DVC's own S3 tests use), on 127.0.0.1
  inside this process; DVC talks to it over HTTP through dvc-s3, exactly as to AWS;
- clone A is a copy of the reproduced tiny pipeline. It pushes git to a local bare repo ("origin") and
  its outputs to the bucket. Its S3 credentials are in `.dvc/config.local`; every teammate clone gets
  them only from AWS env vars, so both ways DVC reads credentials are exercised;
- each teammate is a fresh `git clone` of origin.
Each flow's wall time and the bytes it moved are collected in `ledger` and printed at the end of the
module (`pytest -s`).
"""
import json
import logging
import re
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, Repo
from repo_tools import copy_repo, tree_hashes

BUCKET = "lmtune-team"
URL = f"s3://{BUCKET}/store"
# Made up per run (moto accepts any), so finding them anywhere in git means this run leaked them.
KEY_ID, SECRET = "AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
METRICS = ("metrics/train.json", "metrics/eval.json")
# Two experiments A runs and shares; the run-cache flow repeats the first one's params in a teammate clone.
EXPERIMENTS = {"lr-hi": 2.0e-3, "lr-lo": 5.0e-4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    endpoint: str
    client: object

    def stored_bytes(self, bucket=BUCKET) -> int:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(o["Size"] for page in pages for o in page.get("Contents", []))


@dataclass
class Team:
    s3: S3
    origin: Path
    a: Repo
    base: Path
    ledger: list
    exps: dict = field(default_factory=dict)  # name -> what A's run of it produced

    def clone(self, name: str) -> Repo:
        """A teammate: a fresh git clone of origin, with S3 credentials only in the environment."""
        dest = self.base / name
        subprocess.run(["git", "clone", "-q", str(self.origin), str(dest)], check=True, capture_output=True)
        repo = Repo(dest)
        isolate_aws(repo, self.base)
        repo.env.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
        return repo

    def timed(self, flow: str, fn, moved=None):
        """Run fn(); record its wall time and `moved()` (bytes) under `flow`."""
        before = moved() if moved else 0
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        self.ledger.append((flow, seconds, (moved() - before) if moved else None))
        return result


def isolate_aws(repo: Repo, base: Path) -> None:
    """No AWS settings from the machine running the tests: no env credentials, no ~/.aws files, no
    instance-metadata lookups (which would also make a missing credential slow to fail)."""
    for k in [k for k in repo.env if k.startswith("AWS_")]:
        del repo.env[k]
    repo.env.update(AWS_CONFIG_FILE=str(base / "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(base / "no-aws-credentials"),
                    AWS_EC2_METADATA_DISABLED="true")


def cache_bytes(repo: Repo) -> int:
    return sum(f.stat().st_size for f in (repo.path / ".dvc/cache").rglob("*") if f.is_file())


def remote_cmd(repo: Repo, *args, **kw):
    """`make push` / `make pull` / `make remote-check`: lmtune.cli.remote checks the remote, then runs DVC."""
    return repo.run(sys.executable, "-m", "lmtune.cli.remote", *args, **kw)


def stage_names(repo: Repo) -> list[str]:
    return list(yaml.safe_load((repo.path / "dvc.yaml").read_text())["stages"])


def read(repo: Repo, rel: str) -> bytes:
    return (repo.path / rel).read_bytes()


@pytest.fixture(scope="module")
def ledger():
    rows = []
    yield rows
    print("\nteam flows (wall s, bytes moved):")
    for flow, seconds, moved in rows:
        print(f"  {flow:<48} {seconds:7.1f} s  {'' if moved is None else f'{moved / 2**20:8.2f} MiB ({moved} B)'}")


@pytest.fixture(scope="module")
def s3():
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one log line per S3 request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # 0: a free port
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    client.create_bucket(Bucket=BUCKET)
    yield S3(endpoint, client)
    server.stop()


@pytest.fixture(scope="module")
def team(tiny_repro, s3, ledger, tmp_path_factory) -> Team:
    """Clone A (the reproduced tiny pipeline) with the S3 remote committed, pushed to origin and the bucket."""
    base = tmp_path_factory.mktemp("team")
    origin = base / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], check=True)
    a = copy_repo(tiny_repro, base / "a")
    isolate_aws(a, base)
    a.dvc("remote", "add", "-d", "team", URL)
    a.dvc("remote", "modify", "team", "endpointurl", s3.endpoint)  # not a secret: committed
    a.dvc("remote", "modify", "--local", "team", "access_key_id", KEY_ID)  # secrets: .dvc/config.local only
    a.dvc("remote", "modify", "--local", "team", "secret_access_key", SECRET)
    a.commit("tiny pipeline run; S3 remote")
    a.run("git", "remote", "add", "origin", str(origin))
    a.run("git", "push", "-q", "origin", "HEAD:main")
    t = Team(s3, origin, a, base, ledger)
    t.timed("1 S3: A dvc push (via lmtune.cli.remote push)", lambda: remote_cmd(a, "push"), s3.stored_bytes)
    return t


@pytest.fixture(scope="module")
def teammate(team) -> Repo:
    """B: a fresh clone that pulled everything from S3 (env-var credentials)."""
    b = team.clone("b")
    assert not (b.path / "models/final").exists()  # only git content so far
    team.timed("1 S3: B dvc pull (via lmtune.cli.remote pull)", lambda: remote_cmd(b, "pull"), lambda: cache_bytes(b))
    return b


@pytest.fixture(scope="module")
def shared_experiments(team) -> Team:
    """A runs the two experiments and pushes them: git refs to origin, outputs to the bucket."""
    a = team.a
    for name, lr in EXPERIMENTS.items():
        team.timed(f"2 exp: A dvc exp run {name}", lambda: a.dvc("exp", "run", "-n", name, "-S", f"train.learning_rate={lr}"))
        team.exps[name] = {
            "export": tree_hashes(a.path, tops=("models/export",)),
            "metrics": {f: read(a, f) for f in METRICS},
        }
    team.timed("2 exp: A dvc exp push origin lr-hi lr-lo",
               lambda: a.dvc("exp", "push", "origin", *EXPERIMENTS), team.s3.stored_bytes)
    return team


# --- 1. S3 remote -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_s3_push_then_fresh_clone_pulls_and_repro_is_a_noop(team, teammate):
    a, b = team.a, teammate
    # The committed config names the bucket and the endpoint, never a credential; those sit in the
    # git-ignored .dvc/config.local (A) or the environment (B).
    committed = a.run("git", "show", "HEAD:.dvc/config").stdout
    assert URL in committed and team.s3.endpoint in committed, committed
    for secret in (KEY_ID, SECRET):
        assert secret not in committed
        assert a.run("git", "grep", "-q", secret, "HEAD", check=False).returncode != 0, "a credential is in git"
    assert KEY_ID in (a.path / ".dvc/config.local").read_text()
    assert a.run("git", "check-ignore", "-q", ".dvc/config.local", check=False).returncode == 0
    assert not (b.path / ".dvc/config.local").exists()
    assert team.s3.stored_bytes() > 0

    # B has exactly A's bytes: every data, model and metrics file.
    assert tree_hashes(b.path) == tree_hashes(a.path)
    out = b.dvc("repro").stdout
    assert "Running stage" not in out, out
    for stage in stage_names(b):
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    for f in METRICS:
        assert read(b, f) == read(a, f), f
    assert b.dvc("metrics", "diff", "--json").stdout.strip() in ("{}", "")
    assert b.run("git", "status", "--porcelain").stdout.strip() == ""


@pytest.mark.slow
def test_wrong_endpoint_or_missing_bucket_is_one_line(team, teammate):
    b, s3 = teammate, team.s3
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    b.dvc("remote", "add", "--local", "wrong-endpoint", URL)
    b.dvc("remote", "modify", "--local", "wrong-endpoint", "endpointurl", closed)
    b.dvc("remote", "add", "--local", "no-bucket", "s3://no-such-bucket/store")
    b.dvc("remote", "modify", "--local", "no-bucket", "endpointurl", s3.endpoint)
    stored = s3.stored_bytes()
    cases = {
        "wrong-endpoint": rf"error: remote 'wrong-endpoint' \({re.escape(URL)} at {re.escape(closed)}\): cannot reach it: .*{re.escape(closed)}",
        "no-bucket": rf"error: remote 'no-bucket' \(s3://no-such-bucket/store at {re.escape(s3.endpoint)}\): bucket 'no-such-bucket' does not exist",
    }
    for remote, expected in cases.items():
        for cmd in ("check", "push", "pull"):
            proc = remote_cmd(b, cmd, "-r", remote, check=False)
            assert proc.returncode == 2, (cmd, remote, proc.stdout, proc.stderr)
            assert proc.stdout == "", (cmd, remote, proc.stdout)  # DVC never ran
            lines = proc.stderr.splitlines()
            assert len(lines) == 1 and re.fullmatch(expected + r".*", lines[0]), (cmd, remote, proc.stderr)
    assert s3.stored_bytes() == stored
    # The team remote itself checks fine.
    ok = remote_cmd(b, "check")
    assert ok.stdout.strip() == f"remote 'team' ({URL} at {s3.endpoint}): reachable, bucket '{BUCKET}' exists"


# --- 2. Shared experiments --------------------------------------------------------------------------------

def exp_entries(show: list) -> dict:
    """name -> data of every experiment in `dvc exp show --json`."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") and isinstance(node.get("data"), dict) and node.get("rev") != "workspace":
                found[node["name"]] = node["data"]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(show)
    return found


@pytest.mark.slow
def test_experiments_pushed_by_a_are_pulled_shown_and_applied_by_b(shared_experiments):
    team = shared_experiments
    b = team.clone("b-exp")
    # Git refs only (--no-cache): enough to compare params and metrics (they are in git), no model bytes.
    team.timed("2 exp: B dvc exp pull --no-cache origin lr-hi lr-lo",
               lambda: b.dvc("exp", "pull", "--no-cache", "origin", *EXPERIMENTS), lambda: cache_bytes(b))
    assert cache_bytes(b) == 0
    shown = exp_entries(json.loads(b.dvc("exp", "show", "--json").stdout))
    assert set(EXPERIMENTS) <= set(shown), shown.keys()
    for name, lr in EXPERIMENTS.items():
        assert shown[name]["params"]["params.yaml"]["data"]["train"]["learning_rate"] == lr
        train = shown[name]["metrics"]["metrics/train.json"]["data"]
        assert train == json.loads(team.exps[name]["metrics"]["metrics/train.json"]), name
    # ... and in the compare table (lmtune.cli.compare reads the same git refs: still no model bytes).
    reports = team.base / "b-exp-reports"
    team.timed("2 exp: B make compare lr-hi lr-lo (refs only)",
               lambda: b.run(sys.executable, "-m", "lmtune.cli.compare", *EXPERIMENTS, "--out", str(reports)))
    rows = json.loads((reports / "compare.json").read_text())["rows"]
    compared = {run["name"]: run["tuned"] for row in rows for run in row["runs"]}
    for name in EXPERIMENTS:
        assert compared[name] == json.loads(team.exps[name]["metrics"]["metrics/eval.json"])["tuned"], name
    assert cache_bytes(b) == 0
    # lr-hi: the experiment A ran first, so not the one left in A's workspace. `dvc exp apply` checks the
    # outputs out of the cache (without them it fails: "Checkout failed ... Is your cache up to date?"),
    # so B first pulls that one experiment again, now with its outputs from the DVC remote.
    team.timed("2 exp: B dvc exp pull origin lr-hi (its outputs)", lambda: b.dvc("exp", "pull", "origin", "lr-hi"),
               lambda: cache_bytes(b))
    b.dvc("exp", "apply", "lr-hi")
    assert "up to date" in b.dvc("status").stdout  # every output of lr-hi is in the workspace
    export = tree_hashes(b.path, tops=("models/export",))
    assert export and export == team.exps["lr-hi"]["export"]
    assert export != team.exps["lr-lo"]["export"]
    for f in METRICS:
        assert read(b, f) == team.exps["lr-hi"]["metrics"][f], f


# --- 3. Run-cache -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_cache_restores_train_for_the_same_params_in_another_clone(shared_experiments):
    team = shared_experiments
    a = team.a
    # `make push ARGS=--run-cache`: DVC's `push --run-cache` sends the records, lmtune.cli.remote the outputs
    # they name that no other push sends (the run-cache's copies of git-tracked metrics and curves).
    pushed = team.timed("3 run-cache: A make push ARGS=--run-cache", lambda: remote_cmd(a, "push", "--run-cache"),
                        team.s3.stored_bytes)
    assert re.search(r"^run-cache: outputs of \d+ recorded stage runs pushed \(\d+ objects sent\)$", pushed.stdout, re.M), pushed.stdout
    c = team.clone("c-runcache")
    team.timed("3 run-cache: C dvc pull --run-cache", lambda: c.dvc("pull", "--run-cache"), lambda: cache_bytes(c))
    # `pull --run-cache` fetches the run records only; --pull fetches a restored stage's outputs
    # (lr-hi's model, which A's `dvc exp push` put on the remote) when the run-cache names them.
    lr = EXPERIMENTS["lr-hi"]
    proc = team.timed("3 run-cache: C dvc exp run --pull (lr-hi's params)",
                      lambda: c.dvc("exp", "run", "--pull", "-S", f"train.learning_rate={lr}"), lambda: cache_bytes(c))
    out = proc.stdout + proc.stderr
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out, out[-3000:]
    assert "Running stage" not in out, out[-3000:]  # evaluate and export are restored too
    for f in METRICS:
        assert read(c, f) == team.exps["lr-hi"]["metrics"][f], f
    assert tree_hashes(c.path, tops=("models/export",)) == team.exps["lr-hi"]["export"]


# --- lmtune.cli.remote without S3 (fast) ----------------------------------------------------------------------

def test_remote_check_without_a_remote_or_with_a_folder_remote(tmp_path):
    repo = Repo(tmp_path)
    repo.env["PYTHONPATH"] = str(ROOT)  # a bare git + DVC repo, without the project's files
    repo.run("git", "init", "-q")
    repo.dvc("init", "-q")
    proc = remote_cmd(repo, "push", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: DVC remote: ") and "dvc remote add -d" in lines[0], proc.stderr
    repo.dvc("remote", "add", "-d", "shared", str(tmp_path / "store"))  # a folder: created by the first push
    assert remote_cmd(repo, "check").stdout.strip() == f"remote 'shared' ({tmp_path / 'store'}): reachable"
