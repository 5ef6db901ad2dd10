"""`posecast export` and `posecast upload`: only the model files, a card with metadata, and
the Hub's failures as one line (against a stand-in of the Hub's HTTP API)."""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import cli_json, syllables

from posecast.media import AudioClip
from posecast.ownership import MARKER
from posecast.publish import split_card

MODEL_FILES = ["README.md", "config.json", "model.safetensors"]


def _files(folder):
    """The files of `folder` but posecast's ownership marker (checked apart)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                  and p.name != MARKER)


def test_export_writes_only_the_model_files_and_the_export_renders(run_cli, tmp_path,
                                                                    portrait_path, tiny_student,
                                                                    synthetic_dataset):
    run = tiny_student
    assert {"checkpoint", "ode_pairs", "train_log.jsonl"} <= {p.name for p in run.iterdir()}
    out = tmp_path / "exported"
    result = run_cli("export", run, out, "--json")
    assert result.code == 0, result.stderr
    summary = cli_json(result.stdout, "export")
    assert summary["files"] == MODEL_FILES == _files(out) and (out / MARKER).is_file()
    assert summary["outputs"] == [str(out)]
    assert (out / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    metadata, body = split_card((out / "README.md").read_text())
    assert metadata["license"] == "apache-2.0" and metadata["library_name"] == "posecast"
    assert "posecast" in metadata["tags"]
    assert "base_model" not in metadata  # the teacher was a local folder, not a repo id
    training = body[body.index("## Training"):]
    assert "`posecast distill`" in training and f"`{synthetic_dataset.name}`" in training
    assert str(synthetic_dataset.parent) not in body  # no trainer's file system on the Hub
    assert '"student_steps": 2' in body  # the recipe, from checkpoint/state.json

    again = tmp_path / "again"  # an export exports to itself: no second Training section
    assert run_cli("export", out, again, "--license", "mit").code == 0
    metadata, body = split_card((again / "README.md").read_text())
    assert metadata["license"] == "mit" and body.count("## Training") == 1

    audio = tmp_path / "speech.wav"
    AudioClip(syllables(0.5), 16_000).save_wav(audio)
    video = tmp_path / "talk.mp4"
    result = run_cli("render", audio, portrait_path, "-o", video, "--model", out, "--device",
                     "cpu")
    assert result.code == 0 and video.stat().st_size > 0, result.stderr


def test_export_refusals_are_one_line_and_write_nothing(run_cli, tmp_path, run_folder):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    not_a_model = tmp_path / "clips"
    not_a_model.mkdir()
    for args, words in (
        ([run_folder, taken], "already exists"),
        ([run_folder, taken, "--overwrite"], "not made by posecast"),
        ([run_folder, run_folder / "inside"], "outside the run folder"),
        ([not_a_model, tmp_path / "out"], "not a posecast model or run folder"),
        ([tmp_path / "missing", tmp_path / "out"], "no such run or model folder"),
    ):
        result = run_cli("export", *args)
        assert result.code != 0 and words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _files(taken) == ["notes.txt"]
    assert not (tmp_path / "out").exists() and not (run_folder / "inside").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as `posecast train` leaves it (a tiny untrained model, its checkpoint's
    state.json, a training log), made in a moment."""
    import torch

    from posecast.config import preset
    from posecast.dit.denoiser import Denoiser
    from posecast.dit.pretrained import save_pretrained

    torch.manual_seed(0)
    run = save_pretrained(Denoiser(preset("tiny")), tmp_path / "runs" / "teacher")
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.safetensors").write_bytes(b"optimiser state")
    (run / "checkpoint" / "state.json").write_text(json.dumps({
        "step": 3, "train_config": {"max_steps": 3, "learning_rate": 0.001},
        "dataset": str(tmp_path / "data" / "clips"), "initial_model": None}))
    (run / "train_log.jsonl").write_text('{"step": 3, "loss": 0.5}\n')
    return run


def test_a_mimicmotion_fine_tune_exports_with_its_components_and_licence(run_cli, tmp_path):
    """A MimicMotion run folder's model is its weights plus SVD's components; the card keeps
    the licences and declares `other`, and the base model named as a repo id."""
    run = tmp_path / "mm"
    files = {"config.json": json.dumps({"family": "mimicmotion"}).encode(),
             "model.safetensors": b"weights", "vae/config.json": b"{}",
             "vae/diffusion_pytorch_model.safetensors": b"vae", "image_encoder/config.json": b"{}",
             "feature_extractor/preprocessor_config.json": b"{}",
             "scheduler/scheduler_config.json": b"{}",
             "README.md": b"---\nlicense: other\n---\n# MimicMotion\n\nLicences: research only.\n",
             "checkpoint/state.json": json.dumps({"step": 2, "settings": {"frames": 4},
                                                   "init_from": "me/mimicmotion"}).encode(),
             "checkpoint/state.safetensors": b"optimiser", "train_log.jsonl": b""}
    for name, data in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    out = tmp_path / "exported"
    result = run_cli("export", run, out, "--json")
    assert result.code == 0, result.stderr
    expected = sorted(name for name in files if not name.startswith(("checkpoint", "train_")))
    assert cli_json(result.stdout, "export")["files"] == expected == _files(out)
    metadata, body = split_card((out / "README.md").read_text())
    assert metadata["license"] == "other" and metadata["base_model"] == "me/mimicmotion"
    assert "research only" in body and "fine-tuned from `me/mimicmotion`" in body
    (run / "scheduler" / "scheduler_config.json").unlink()
    result = run_cli("export", run, tmp_path / "again")
    assert result.code == 1 and "lacks scheduler/scheduler_config.json" in result.stderr


class StandInHub:
    """The endpoints `posecast upload` calls (create_repo, create_branch, validate-yaml,
    preupload, commit), answering as the Hub does: 401 for a wrong token, 409 for an existing
    repo, 404 (RepoNotFound) for another account's private repo."""

    token = "hf_good"

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo id → {"private": bool, "branches": {…}}
        self.foreign = {"someone/private"}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub.handle(self, "GET")

            def do_POST(self) -> None:
                hub.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = request.path.split("?")[0]
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        self.requests.append((method, path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.reply(request, 401, {"error": "Invalid credentials"},
                              {"X-Error-Message": "Invalid credentials in Authorization header"})
        if path == "/api/validate-yaml":
            return self.reply(request, 200, {"errors": [], "warnings": []})
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}"
            if repo_id in self.repos or repo_id in self.foreign:
                return self.reply(request, 409, {"error": "You already created this model repo",
                                                 "url": f"{self.url}/{repo_id}"})
            self.repos[repo_id] = {"private": payload.get("visibility") == "private",
                                   "branches": {"main": {}}}
            return self.reply(request, 200, {"url": f"{self.url}/{repo_id}"})
        parts = path.split("/")  # /api/models/OWNER/NAME/ACTION/REVISION
        repo_id = "/".join(parts[3:5])
        if parts[:3] != ["", "api", "models"] or repo_id not in self.repos:
            return self.reply(request, 404, {"error": "Repository not found"},
                              {"X-Error-Code": "RepoNotFound"})
        repo, action, revision = self.repos[repo_id], parts[5], parts[6]
        if action == "branch":
            repo["branches"].setdefault(revision, dict(repo["branches"]["main"]))
            return self.reply(request, 200, {})
        if revision not in repo["branches"]:
            return self.reply(request, 404, {"error": "Revision not found"},
                              {"X-Error-Code": "RevisionNotFound"})
        if action == "preupload":
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                      "oid": None} for f in json.loads(body)["files"]]
            return self.reply(request, 200, {"files": files})
        if action == "commit":
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    repo["branches"][revision][item["value"]["path"]] = \
                        base64.b64decode(item["value"]["content"])
            return self.reply(request, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/1",
                                             "commitOid": "1" * 40})
        return self.reply(request, 404, {"error": "not part of the stand-in"})

    @staticmethod
    def reply(request, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(data)


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    stand_in = StandInHub()
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setenv("HF_TOKEN", StandInHub.token)
    # the suite runs offline (conftest); huggingface_hub read that when imported
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def test_upload_commits_only_the_model_files_to_a_new_branch(run_cli, hub, run_folder):
    result = run_cli("upload", run_folder, "me/student", "--private", "--revision", "exp",
                     "--json")
    assert result.code == 0, result.stderr
    summary = cli_json(result.stdout, "upload")
    assert summary["repo_id"] == "me/student" and summary["revision"] == "exp"
    repo = hub.repos["me/student"]
    assert repo["private"] and repo["branches"]["main"] == {}
    committed = repo["branches"]["exp"]
    assert sorted(committed) == MODEL_FILES == summary["files"]
    assert committed["model.safetensors"] == (run_folder / "model.safetensors").read_bytes()
    metadata, body = split_card(committed["README.md"].decode())
    assert metadata["library_name"] == "posecast" and metadata["license"] == "apache-2.0"
    assert "trained from scratch, for 3 steps" in body and "`clips`" in body
    assert "Last logged step: 3 (loss 0.5)" in body

    result = run_cli("upload", run_folder, "me/student")  # an existing repo, onto main
    assert result.code == 0, result.stderr
    assert sorted(repo["branches"]["main"]) == MODEL_FILES


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_upload_failures_are_one_line(run_cli, tmp_path, hub, run_folder, monkeypatch):
    import huggingface_hub.constants

    def fails(words, *args):
        result = run_cli("upload", run_folder, *args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.code != 0 and len(errors) == 1 and words in errors[0], result.stderr
        assert "Traceback" not in result.stderr  # progress lines may come before the error

    fails("no such model repo", "someone/private")  # exists, but not this token's to see
    fails("OWNER/NAME", "no-owner")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    fails("refused the token (401", "me/student")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    fails("no Hugging Face token", "me/student")
    monkeypatch.setenv("HF_TOKEN", StandInHub.token)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    fails("cannot reach the Hugging Face Hub", "me/student")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails("HF_HUB_OFFLINE is set", "me/student")
    assert hub.repos == {}  # nothing was created by any of them


def test_render_takes_a_revision_of_a_published_model(run_cli, tmp_path, portrait_path,
                                                      tiny_student, trained_tiny, monkeypatch):
    """A repo whose main holds a teacher and whose branch v1 holds the exported student (as
    `posecast upload --revision v1` leaves it): --revision v1 renders, main is refused."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_cli("export", tiny_student, tmp_path / "student").code == 0
    repo = cache / "models--me--talker"
    for branch, folder, commit in (("main", trained_tiny[0], "a" * 40),
                                   ("v1", tmp_path / "student", "b" * 40)):
        (repo / "snapshots" / commit).mkdir(parents=True)
        for name in MODEL_FILES:
            (repo / "snapshots" / commit / name).write_bytes((folder / name).read_bytes())
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
    audio = tmp_path / "speech.wav"
    AudioClip(syllables(0.3), 16_000).save_wav(audio)
    result = run_cli("render", audio, portrait_path, "-o", tmp_path / "main.mp4", "--model",
                     "me/talker", "--device", "cpu")
    assert result.code != 0 and "is a teacher" in result.stderr, result.stderr
    result = run_cli("render", audio, portrait_path, "-o", tmp_path / "v1.mp4", "--model",
                     "me/talker", "--revision", "v1", "--device", "cpu")
    assert result.code == 0 and (tmp_path / "v1.mp4").is_file(), result.stderr
