"""The CLI against both generations of the service (docs/protocol.md §11.6): a real server over
a socket started with ``--downloads files`` (no archive endpoint) or ``archive``.

Checkpoints are made through the real API: ``ckpt save`` for weights/ and sampler_weights/,
``save_weights_external`` (our client's ``save_external``) for an external_weights/ export.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from logits_cli import config
from logits_cli.api import open_client
from logits_cli.api.verify import MANIFEST_NAME
from logits_cli.uri import CheckpointRef
from tests.cli.conftest import invoke


@pytest.fixture(params=["files", "archive"])
def deployment(request: pytest.FixtureRequest, server_factory: Any, monkeypatch: Any) -> Any:
    server = server_factory(downloads=request.param)
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
    server.generation = request.param
    return server


def ok(*args: str) -> Any:
    result = invoke(args)
    assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr)
    return result


def _export(run_id: str, name: str) -> str:
    async def work() -> str:
        async with open_client(config.resolve()) as client:
            made = await client.save_external(run_id, name, ttl_seconds=3600)
            return str(made)

    return asyncio.run(work())


@pytest.fixture
def mixed_run(deployment: Any, monkeypatch: Any) -> dict[str, str]:
    """A run with one weights/, one sampler_weights/ and (files generation) one export."""
    run_id = ok("runs", "create", "--base-model", "logits/tiny", "--rank", "2", "-q").stdout.strip()
    monkeypatch.setenv("LOGITS_RUN", run_id)
    paths = {
        "weights": ok("ckpt", "save", "w1", "-q").stdout.strip(),
        "sampler": ok("ckpt", "save", "s1", "--sampler", "-q").stdout.strip(),
        "run": run_id,
    }
    if deployment.generation == "files":
        paths["external"] = _export(run_id, "e1")
    return paths


def _tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_external_downloads_file_by_file_and_verifies(
    mixed_run: dict[str, str], tmp_path: Path
) -> None:
    if "external" not in mixed_run:
        pytest.skip("exports exist on the files generation only")
    dest = tmp_path / "dest"
    result = ok("ckpt", "download", mixed_run["external"], "-o", str(dest))
    assert _tree(dest) == [
        "e1",
        f"e1/{MANIFEST_NAME}",
        "e1/adapter_config.json",
        "e1/adapter_model.safetensors",
    ]
    manifest = json.loads((dest / "e1" / MANIFEST_NAME).read_text())
    assert manifest["content"] == "adapter-only" and manifest["archive_sha256"] is None
    assert manifest["checkpoint_type"] == "external"
    ok("ckpt", "verify", str(dest / "e1"))
    again = ok("ckpt", "download", mixed_run["external"], "-o", str(dest), "--json")
    assert json.loads(again.stdout)[0]["skipped"] is True
    assert "exporting" not in result.stderr


def test_weights_are_exported_with_a_notice_then_the_export_is_gone(
    mixed_run: dict[str, str], deployment: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    result = ok("ckpt", "download", mixed_run["weights"], "-o", str(dest))
    manifest = json.loads((dest / "w1" / MANIFEST_NAME).read_text())
    ok("ckpt", "verify", str(dest / "w1"))
    listed = ok("ckpt", "ls", mixed_run["run"], "--json").stdout
    if deployment.generation == "files":
        assert [line for line in result.stderr.splitlines() if "exporting" in line] == [
            f"exporting {mixed_run['weights']}: this deployment downloads file by file, which "
            "starts a training session on the service"
        ]
        assert manifest["content"] == "adapter-only"
        assert manifest["export"].split("/external_weights/")[1].startswith("export-w1-")
        assert manifest["tinker_path"] == mixed_run["weights"]
        assert sorted(p.name for p in (dest / "w1").iterdir()) == [
            MANIFEST_NAME,
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        # The export was deleted once the files were installed: only e1 is left.
        kinds = [
            c["checkpoint_id"] for c in json.loads(listed) if c["checkpoint_type"] == "external"
        ]
        assert kinds == ["external_weights/e1"]
        assert not list(dest.glob(".w1.files*"))
    else:
        assert "exporting" not in result.stderr
        assert manifest["content"] == "full"
    # Present now: a second download fetches nothing and exports nothing.
    again = ok("ckpt", "download", mixed_run["weights"], "-o", str(dest), "--json")
    assert json.loads(again.stdout)[0]["skipped"] is True
    assert "exporting" not in again.stderr


def test_sampler_download_is_unsupported_on_the_files_generation(
    mixed_run: dict[str, str], deployment: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    result = invoke(["ckpt", "download", mixed_run["sampler"], "-o", str(dest)])
    if deployment.generation == "archive":
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 10, result.stderr
    assert any(
        line.startswith(f"Error: {mixed_run['sampler']}: this deployment cannot download sampler")
        for line in result.stderr.splitlines()
    ), result.stderr
    assert not dest.exists()  # nothing created before a URL was obtained


def test_missing_checkpoint_stays_not_found(mixed_run: dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    result = invoke(
        ["ckpt", "download", f"logits://{mixed_run['run']}/weights/nope", "-o", str(dest)]
    )
    assert result.exit_code == 4, result.stderr
    assert not dest.exists()


def test_sync_of_a_mixed_run_with_and_without_export(
    mixed_run: dict[str, str], deployment: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "sync"
    first = invoke(["ckpt", "sync", mixed_run["run"], "-o", str(dest), "--json", "--no-export"])
    assert first.exit_code == (10 if deployment.generation == "files" else 0), first.stderr
    statuses = {
        i["tinker_path"]: (i["status"], i["error"]) for i in json.loads(first.stdout)["items"]
    }
    if deployment.generation == "archive":
        assert {p: s for p, (s, _) in statuses.items()} == {
            mixed_run["weights"]: "downloaded",
            mixed_run["sampler"]: "downloaded",
        }
        return
    assert statuses[mixed_run["external"]] == ("downloaded", None)
    assert statuses[mixed_run["sampler"]][0] == "skipped"
    assert statuses[mixed_run["sampler"]][1].startswith("this deployment cannot download sampler")
    assert statuses[mixed_run["weights"]][0] == "skipped"
    assert statuses[mixed_run["weights"]][1].endswith("and exporting is off")
    second = invoke(["ckpt", "sync", mixed_run["run"], "-o", str(dest), "--json"])
    assert second.exit_code == 0, second.stderr
    statuses = {i["tinker_path"]: i["status"] for i in json.loads(second.stdout)["items"]}
    assert statuses == {
        mixed_run["weights"]: "downloaded",
        mixed_run["sampler"]: "skipped",
        mixed_run["external"]: "present",
    }
    # A third run: the exported copy counts as present, no new export.
    # --export, the opt-in of old crontabs, is still accepted: exporting is the default.
    third = invoke(["ckpt", "sync", mixed_run["run"], "-o", str(dest), "--json", "--export"])
    statuses = {i["tinker_path"]: i["status"] for i in json.loads(third.stdout)["items"]}
    assert statuses[mixed_run["weights"]] == "present"


def test_url_prints_the_per_file_map(mixed_run: dict[str, str], deployment: Any) -> None:
    if deployment.generation == "archive":
        assert ok("ckpt", "url", mixed_run["weights"]).stdout.count("\n") == 1
        return
    lines = ok("ckpt", "url", mixed_run["external"]).stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert all(line.split("\t")[1].startswith(deployment.base_url) for line in lines)
    answer = json.loads(ok("ckpt", "url", mixed_run["external"], "--json").stdout)
    assert sorted(answer["urls"]) == ["adapter_config.json", "adapter_model.safetensors"]
    assert answer["path"] == mixed_run["external"] and answer["expires"].endswith("Z")
    refused = invoke(["ckpt", "url", mixed_run["weights"]])
    assert refused.exit_code == 10 and "Hint: pass --export" in refused.stderr
    exported = ok("ckpt", "url", mixed_run["weights"], "--export")
    assert len(exported.stdout.splitlines()) == 2
    assert "the export is kept until" in exported.stderr
    assert invoke(["ckpt", "url", mixed_run["sampler"]]).exit_code == 10


def test_external_kind_in_every_command(mixed_run: dict[str, str]) -> None:
    if "external" not in mixed_run:
        pytest.skip("exports exist on the files generation only")
    external = mixed_run["external"]
    assert CheckpointRef.parse(external).kind == "external_weights"
    ok("ckpt", "info", external)
    ok("ckpt", "publish", external)
    ok("ckpt", "unpublish", external)
    ok("ckpt", "ttl", external, "--set", "2h")
    refused = invoke(["ckpt", "load", external])
    assert refused.exit_code == 2 and "adapter-only exports" in refused.stderr
    ok("ckpt", "rm", external, "--yes")
    assert invoke(["ckpt", "info", external]).exit_code == 4
