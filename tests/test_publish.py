"""`python -m lmtune.cli.publish`: the dry run and every refusal, offline (the upload itself needs the hub).

Fast tests drive `main()` in process against temp folders and a two-stage DVC repo; the slow ones run
the real command in the tiny pipeline's repo, so `dvc status` and the card are the pipeline's own.
"""
import json
import subprocess
import sys

import pytest

from conftest import VENV_BIN
from lmtune import paths
from lmtune.cli import publish


def run_main(capsys, *argv) -> tuple[int, str, str]:
    try:
        publish.main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("repo_id", ["gpt2", "a/b/c", "bad id/x", ""])
def test_bad_repo_id_is_refused_in_one_line(capsys, repo_id):
    code, out, err = run_main(capsys, repo_id, "--dry-run")
    assert code == 2 and out == "" and "REPO" in one_line_error(err)


def test_missing_export_is_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "EXPORT", tmp_path / "models" / "export")
    code, out, err = run_main(capsys, "me/model", "--dry-run")
    line = one_line_error(err)
    assert code == 2 and out == "" and "no export to publish" in line and "dvc repro" in line


def test_incomplete_export_names_what_is_missing(capsys, monkeypatch, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text("{}")
    monkeypatch.setattr(paths, "EXPORT", export)
    code, _, err = run_main(capsys, "me/model", "--dry-run")
    line = one_line_error(err)
    assert code == 2 and "README.md" in line and "*.safetensors" in line and "config.json" not in line


@pytest.fixture
def dvc_repo(tmp_path):
    """A two-stage DVC pipeline, reproduced: `dvc status` is clean until something changes."""
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path)}

    def sh(*cmd):
        return subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)

    sh("git", "init", "-q")
    sh(str(VENV_BIN / "dvc"), "init", "-q")
    (tmp_path / "params.yaml").write_text("n: 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  make:\n    cmd: python3 -c \"print(1)\" > a.txt\n    params: [n]\n    outs: [a.txt]\n"
        "  export:\n    cmd: cp a.txt b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n")
    sh(str(VENV_BIN / "dvc"), "repro", "-q")
    return tmp_path


def test_clean_dvc_status_passes_and_any_change_is_refused(dvc_repo):
    publish.check_up_to_date(dvc_repo)  # clean: no error
    (dvc_repo / "params.yaml").write_text("n: 2\n")
    with pytest.raises(publish.UserError) as e:
        publish.check_up_to_date(dvc_repo)
    assert "dvc status is not clean (changed: make)" in str(e.value) and "\n" not in str(e.value)
    (dvc_repo / "params.yaml").write_text("n: 1\n")
    (dvc_repo / "b.txt").write_text("edited by hand\n")  # an output that no longer matches dvc.lock
    with pytest.raises(publish.UserError) as e:
        publish.check_up_to_date(dvc_repo)
    assert "changed: export" in str(e.value)


def test_upload_creates_the_repo_and_branch_then_uploads_the_folder(monkeypatch, tmp_path):
    # No network here: record what lmtune asks of huggingface_hub's HfApi (the calls and their arguments).
    import huggingface_hub

    calls = []

    class RecordingApi:
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(self, repo_id, **kw):
            calls.append(("create_branch", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return type("Info", (), {"commit_url": "https://huggingface.co/me/m/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    out = publish.upload("me/m", tmp_path, private=True, revision="v1", token="hf_x")
    assert calls[0] == ("token", "hf_x")
    assert calls[1] == ("create_repo", "me/m", {"private": True, "repo_type": "model", "exist_ok": True})
    assert calls[2] == ("create_branch", "me/m", {"branch": "v1", "repo_type": "model", "exist_ok": True})
    up = calls[3][1]
    assert (up["repo_id"], up["folder_path"], up["revision"], up["repo_type"]) == ("me/m", tmp_path, "v1", "model")
    assert "commit/abc" in out


# ---- slow: the real command in the tiny pipeline's repo -------------------------------------------

def publish_cmd(repo, *args, **env):
    return subprocess.run([sys.executable, "-m", "lmtune.cli.publish", *args], cwd=repo.path, text=True,
                          capture_output=True, env={**repo.env, **env})


@pytest.mark.slow
def test_dry_run_lists_every_export_file_and_the_card(tiny_repro):
    export = tiny_repro.path / "models/export"
    # offline and without a token: a dry run needs neither
    proc = publish_cmd(tiny_repro, "me/tiny", "--dry-run", "--private", "--revision", "v1",
                       HF_TOKEN="", HF_HOME=str(tiny_repro.path / ".hf-empty"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    files = sorted(p for p in export.rglob("*") if p.is_file())
    assert out.startswith(f"would upload {len(files)} files") and "https://huggingface.co/me/tiny (private, branch v1" in out
    for f in files:
        assert f"{f.stat().st_size:>12,d}  {f.relative_to(export)}" in out, f
    assert out.rstrip().endswith((export / "README.md").read_text().rstrip())


@pytest.mark.slow
def test_refuses_when_the_pipeline_is_not_up_to_date(tiny_repro):
    params = tiny_repro.params
    try:
        params["generate"]["max_new_tokens"] += 1
        tiny_repro.set_params(params)
        proc = publish_cmd(tiny_repro, "me/tiny", "--dry-run")
        line = one_line_error(proc.stderr)
        assert proc.returncode == 2 and proc.stdout == "" and "dvc status is not clean" in line and "export" in line
    finally:
        tiny_repro.run("git", "checkout", "--", "params.yaml")
    assert json.loads(tiny_repro.dvc("status", "--json").stdout) == {}


@pytest.mark.slow
def test_real_upload_refuses_offline_or_without_a_token(tiny_repro):
    empty = str(tiny_repro.path / ".hf-empty")
    proc = publish_cmd(tiny_repro, "me/tiny", HF_HUB_OFFLINE="1", HF_TOKEN="", HF_HOME=empty)
    assert proc.returncode == 2 and "HF_HUB_OFFLINE" in one_line_error(proc.stderr)
    proc = publish_cmd(tiny_repro, "me/tiny", HF_HUB_OFFLINE="0", HF_TOKEN="", HF_HOME=empty)
    assert proc.returncode == 2 and "no Hugging Face token" in one_line_error(proc.stderr)
