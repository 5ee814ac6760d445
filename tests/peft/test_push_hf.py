"""``ckpt push-hf`` against a local stand-in of the Hub (``fake_hub.py``) that speaks the
endpoints huggingface_hub calls: the files that arrive, the card, the refusal of a repo that
names another checkpoint, no new commit for the same content, --dry-run staging. The CLI
runs as a subprocess, since huggingface_hub reads HF_ENDPOINT when it is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peft.fake_hub import FakeHub
from tests.peft.helpers import TINKER_PATH, mark_downloaded
from tests.peft.test_export_cli import moe_tensors, raw_adapter

TOKEN = "hf_testtoken_never_printed"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


def push(hub: FakeHub, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "logits_cli", "ckpt", "push-hf", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert TOKEN not in done.stdout + done.stderr
    return done


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return raw_adapter(tmp_path / "src", moe_tensors(), "Qwen/Qwen3-30B-A3B")


def test_push_uploads_the_export_and_a_card_and_again_makes_no_commit(
    hub: FakeHub, tmp_path: Path, source: Path
) -> None:
    first = push(hub, tmp_path, str(source), "--repo", "me/adapter", "--json")

    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    files = hub.files("me/adapter")
    assert sorted(files) == [
        ".gitattributes",
        ".logits-export.json",
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert report["new_commit"] is True and report["revision"] == "main"
    assert report["commit_url"] == f"{hub.url}/me/adapter/commit/{report['commit']}"
    assert hub.repos["me/adapter"].private is True
    assert TOKEN in hub.tokens_seen
    card = files["README.md"].decode()
    assert card.startswith("---\nbase_model: Qwen/Qwen3-30B-A3B\nlibrary_name: peft\n")
    assert f"logits_checkpoint: {TINKER_PATH}" in card and "vllm serve" in card
    config = json.loads(files["adapter_config.json"])
    assert config["peft_type"] == "LORA" and "gate_proj" in config["target_modules"]
    commits = len(hub.repos["me/adapter"].commits)

    again = push(hub, tmp_path, str(source), "--repo", "me/adapter", "--json")

    assert again.returncode == 0, again.stderr
    assert len(hub.repos["me/adapter"].commits) == commits
    assert json.loads(again.stdout)["new_commit"] is False
    assert json.loads(again.stdout)["commit"] == report["commit"]


def test_a_repo_naming_another_checkpoint_is_refused(
    hub: FakeHub, tmp_path: Path, source: Path
) -> None:
    assert push(hub, tmp_path, str(source), "--repo", "me/adapter", "--public").returncode == 0
    assert hub.repos["me/adapter"].private is False
    other = tmp_path / "other"
    other.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (other / name).write_bytes((source / name).read_bytes())
    mark_downloaded(other, "tinker://run-2:train:0/sampler_weights/other")
    commits = len(hub.repos["me/adapter"].commits)

    refused = push(hub, tmp_path, str(other), "--repo", "me/adapter")

    assert refused.returncode == 5
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error")]
    assert errors == [
        f"Error: me/adapter holds the checkpoint {TINKER_PATH}, not "
        "tinker://run-2:train:0/sampler_weights/other"
    ]
    assert len(hub.repos["me/adapter"].commits) == commits


def test_dry_run_stages_exactly_what_would_be_uploaded(
    hub: FakeHub, tmp_path: Path, source: Path
) -> None:
    staged = tmp_path / "staged"
    dry = push(hub, tmp_path, str(source), "--repo", "me/a", "--dry-run", "-o", str(staged))
    assert dry.returncode == 0, dry.stderr
    assert hub.repos == {}
    real = push(hub, tmp_path, str(source), "--repo", "me/a")
    assert real.returncode == 0, real.stderr
    uploaded = {k: v for k, v in hub.files("me/a").items() if k != ".gitattributes"}
    assert uploaded == {p.name: p.read_bytes() for p in staged.iterdir()}


def test_raw_format_uploads_the_adapter_files_as_they_are(
    hub: FakeHub, tmp_path: Path, source: Path
) -> None:
    done = push(hub, tmp_path, str(source), "--repo", "me/raw", "--format", "raw")
    assert done.returncode == 0, done.stderr
    files = hub.files("me/raw")
    assert files["adapter_model.safetensors"] == (source / "adapter_model.safetensors").read_bytes()
    assert "library_name" not in files["README.md"].decode()
    assert "optimizer_state.safetensors" not in files


def test_create_pr_opens_a_pull_request(hub: FakeHub, tmp_path: Path, source: Path) -> None:
    done = push(hub, tmp_path, str(source), "--repo", "me/pr", "--create-pr", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pr_url"] == f"{hub.url}/me/pr/discussions/1"
    assert sorted(hub.files("me/pr")) == [".gitattributes"]  # main untouched


def test_revision_pushes_to_a_branch_and_a_bad_repo_is_exit_2(
    hub: FakeHub, tmp_path: Path, source: Path
) -> None:
    done = push(hub, tmp_path, str(source), "--repo", "me/br", "--revision", "dev", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["revision"] == "dev"
    assert "adapter_model.safetensors" in hub.files("me/br", "dev")
    assert sorted(hub.files("me/br", "main")) == [".gitattributes"]
    bad = push(hub, tmp_path, str(source), "--repo", "../escape")
    assert bad.returncode == 2 and "Error: --repo must be OWNER/NAME" in bad.stderr
