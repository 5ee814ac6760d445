"""``download --adapter-only`` and ``sync --adapter-only`` (issue 23 point 6): the adapter
files without the optimizer state, on both backends and both generations of the service.

On the archive generation the whole archive is still fetched (its digest covers all of it)
and only the adapter members are extracted; a later full download into the same place
completes such a copy, and an adapter-only request takes any copy of the checkpoint as
present. On the files generation every weights/ download is adapter-only already.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from logits_cli.api.verify import MANIFEST_NAME
from tests.cli.conftest import Cli, invoke

ADAPTER_ONLY = sorted([MANIFEST_NAME, "adapter_config.json", "adapter_model.safetensors"])
FULL = sorted([*ADAPTER_ONLY, "checkpoint_complete", "optimizer_state.safetensors"])


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _manifest(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / MANIFEST_NAME).read_text()))


def test_adapter_only_download_installs_the_adapter_alone_and_a_full_one_completes_it(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    saved = json.loads(cli.ok("ckpt", "save", "w", "--json").stdout)
    path, size = saved["tinker_path"], saved["size_bytes"]
    reference = tmp_path / "reference"
    cli.ok("ckpt", "download", path, "-o", str(reference), "-q")
    dest = tmp_path / "serve"

    result = cli.ok("ckpt", "download", path, "--adapter-only", "-o", str(dest), "--json")

    assert json.loads(result.stdout) == [
        {
            "path": path,
            "local_path": str(dest / "w"),
            "size_bytes": size,
            "bytes_fetched": size,  # the whole archive, to check its digest
            "skipped": False,
            "resumed": False,
        }
    ]
    assert _names(dest) == ["w"]  # no part, journal or staging left
    assert _names(dest / "w") == ADAPTER_ONLY
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (dest / "w" / name).read_bytes() == (reference / "w" / name).read_bytes()
    manifest = _manifest(dest / "w")
    assert manifest["content"] == "adapter-only"
    assert sorted(manifest["files"]) == ["adapter_config.json", "adapter_model.safetensors"]
    assert cli.lines("ckpt", "verify", str(dest), "-q") == [str(dest / "w")]

    again = cli.ok("ckpt", "download", path, "--adapter-only", "-o", str(dest), "--json")
    assert [(r["skipped"], r["bytes_fetched"]) for r in json.loads(again.stdout)] == [(True, 0)]

    # A full download does not take the adapter-only copy for a complete one.
    full = cli.ok("ckpt", "download", path, "-o", str(dest))
    assert full.stdout == f"{dest / 'w'}\n"
    assert f"repaired {dest / 'w'}: optimizer state missing (an adapter-only copy)" in (full.stderr)
    assert _names(dest / "w") == FULL
    for name in FULL[1:]:
        assert (dest / "w" / name).read_bytes() == (reference / "w" / name).read_bytes()
    assert _manifest(dest / "w")["content"] == "full"
    # And a full copy serves an adapter-only request: present, nothing fetched.
    last = cli.ok("ckpt", "download", path, "--adapter-only", "-o", str(dest), "--json")
    assert [(r["skipped"], r["bytes_fetched"]) for r in json.loads(last.stdout)] == [(True, 0)]
    assert _names(dest / "w") == FULL


def test_sampler_checkpoints_are_adapter_only_by_nature(cli: Cli, run: str, tmp_path: Path) -> None:
    path = cli.ok("ckpt", "save", "s", "--sampler", "-q").stdout.strip()
    cli.ok("ckpt", "download", path, "-o", str(tmp_path), "-q")
    assert _manifest(tmp_path / "s")["content"] == "adapter-only"
    again = cli.ok("ckpt", "download", path, "--adapter-only", "-o", str(tmp_path), "--json")
    assert json.loads(again.stdout)[0]["skipped"] is True


def test_sync_adapter_only_counts_adapter_copies_present_and_a_full_sync_completes_them(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    weights = cli.ok("ckpt", "save", "w", "-q").stdout.strip()
    sampler = cli.ok("ckpt", "save", "s", "--sampler", "-q").stdout.strip()
    mirror = tmp_path / "mirror"
    run_dir = mirror / run.replace(":", "%3A")

    def sync(*extra: str) -> dict[str, Any]:
        result = cli.ok("ckpt", "sync", run, "-o", str(mirror), "--json", *extra)
        return dict(json.loads(result.stdout))

    first = sync("--adapter-only")
    assert first["counts"]["downloaded"] == 2
    assert _names(run_dir / "weights" / "w") == ADAPTER_ONLY
    assert _names(run_dir / "sampler_weights" / "s") == ADAPTER_ONLY

    second = sync("--adapter-only")
    assert (second["counts"]["present"], second["bytes_fetched"]) == (2, 0)

    full = sync()
    by_path = {item["tinker_path"]: item for item in full["items"]}
    assert by_path[weights]["status"] == "downloaded"
    assert by_path[weights]["repaired"] == ["optimizer state missing (an adapter-only copy)"]
    assert by_path[sampler]["status"] == "present"  # a sampler has no optimizer state
    assert _names(run_dir / "weights" / "w") == FULL

    last = sync("--adapter-only")
    assert (last["counts"]["present"], last["bytes_fetched"]) == (2, 0)


def test_adapter_only_refuses_the_whole_archive_outputs(cli: Cli, run: str, tmp_path: Path) -> None:
    path = cli.ok("ckpt", "save", "w", "-q").stdout.strip()
    for extra in (["--archive-only", "-o", str(tmp_path)], ["-o", "-"]):
        result = cli("ckpt", "download", path, "--adapter-only", *extra)
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            "Error: --adapter-only installs files; the archive of --archive-only, -o - or "
            "-o FILE.tar is always whole"
        ]
    assert list(tmp_path.iterdir()) == []


# -- both generations (a real server over a socket, docs/protocol.md §11.6) -------------------


@pytest.fixture(params=["files", "archive"])
def deployment(request: pytest.FixtureRequest, server_factory: Any, monkeypatch: Any) -> Any:
    server = server_factory(downloads=request.param)
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
    server.generation = request.param
    return server


def _ok(*args: str) -> Any:
    result = invoke(args)
    assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr)
    return result


def test_adapter_only_on_both_generations(
    deployment: Any, monkeypatch: Any, tmp_path: Path
) -> None:
    run_id = _ok("runs", "create", "--base-model", "logits/tiny", "--rank", "2", "-q").stdout
    monkeypatch.setenv("LOGITS_RUN", run_id.strip())
    path = _ok("ckpt", "save", "w", "-q").stdout.strip()

    result = _ok("ckpt", "download", path, "--adapter-only", "-o", str(tmp_path))

    assert result.stdout == f"{tmp_path / 'w'}\n"
    assert _names(tmp_path / "w") == ADAPTER_ONLY
    manifest = _manifest(tmp_path / "w")
    assert manifest["content"] == "adapter-only"
    exported = [line for line in result.stderr.splitlines() if line.startswith("exporting")]
    assert len(exported) == (1 if deployment.generation == "files" else 0)
    _ok("ckpt", "verify", str(tmp_path / "w"))
    full = _ok("ckpt", "download", path, "-o", str(tmp_path), "--json")
    [answer] = json.loads(full.stdout)
    if deployment.generation == "files":
        # A full download there is adapter-only too: the copy is whole, nothing is exported.
        assert (answer["skipped"], answer["bytes_fetched"]) == (True, 0)
        assert "exporting" not in full.stderr
        assert _names(tmp_path / "w") == ADAPTER_ONLY
    else:
        assert answer["skipped"] is False
        assert _names(tmp_path / "w") == FULL


def test_sync_copies_of_either_generation_stay_present_with_and_without_adapter_only(
    deployment: Any, monkeypatch: Any, tmp_path: Path
) -> None:
    """A files-generation copy is adapter-only because that is all the deployment gives: a
    nightly sync without --adapter-only must not take it for a short copy and export again."""
    run_id = _ok("runs", "create", "--base-model", "logits/tiny", "--rank", "2", "-q").stdout
    run_id = run_id.strip()
    monkeypatch.setenv("LOGITS_RUN", run_id)
    path = _ok("ckpt", "save", "w", "-q").stdout.strip()

    def sync(*extra: str) -> dict[str, Any]:
        args = ("ckpt", "sync", run_id, "-o", str(tmp_path), "--export", "--json", *extra)
        return dict(json.loads(_ok(*args).stdout))

    first = sync("--adapter-only")
    assert [(i["tinker_path"], i["status"]) for i in first["items"]] == [(path, "downloaded")]
    copy = tmp_path / run_id.replace(":", "%3A") / "weights" / "w"
    assert _names(copy) == ADAPTER_ONLY
    assert sync("--adapter-only")["counts"]["present"] == 1
    full = sync()
    if deployment.generation == "files":
        assert (full["counts"]["present"], full["bytes_fetched"]) == (1, 0)
        assert _names(copy) == ADAPTER_ONLY
    else:
        assert full["counts"]["downloaded"] == 1
        assert _names(copy) == FULL
    assert sync()["counts"]["present"] == 1
