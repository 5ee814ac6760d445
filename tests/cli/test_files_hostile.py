"""A hostile files-generation deployment (docs/protocol.md §11.3): the URL map and the files are
whatever a malicious server sends. Driven through the real CLI against a raw-socket server
(tests/hostile_server.py), since our own server never sends such maps.

Every refusal leaves nothing in DEST: not the checkpoint, not a part directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from tests.cli.conftest import invoke
from tests.hostile_server import Request, head, hostile

RUN = "5f1e3c2a-8d4b-4c6e-9a7f-1b2c3d4e5f60:train:0"
EXTERNAL = f"tinker://{RUN}/external_weights/e1"

CONFIG = json.dumps({"r": 2, "peft_type": "LORA"}).encode()
WEIGHTS = save({"base_model.x.lora_A.weight": np.zeros((2, 4), dtype=np.float32)})
GOOD = {"adapter_config.json": CONFIG, "adapter_model.safetensors": WEIGHTS}


def _json(sock: socket.socket, status: int, document: Any) -> None:
    body = json.dumps(document).encode()
    sock.sendall(
        head(status, {"Content-Type": "application/json", "Content-Length": str(len(body))}) + body
    )


def deployment(names: dict[str, str], files: dict[str, bytes], *, lie_digest: bool = False) -> Any:
    """A responder: one run with one external checkpoint, ``names`` (map key -> file id,
    or a whole URL)."""

    def respond(request: Request, sock: socket.socket) -> None:
        base = f"http://{request.headers.get('host', '')}"
        if request.path.endswith(f"/training_runs/{RUN}/checkpoints"):
            row = {
                "checkpoint_id": "external_weights/e1",
                "checkpoint_type": "external",
                "time": "2026-12-01T00:00:00Z",
                "tinker_path": EXTERNAL,
                "size_bytes": sum(len(b) for b in files.values()),
            }
            return _json(sock, 200, {"checkpoints": [row], "cursor": None})
        if request.path.endswith("/external_weights_urls"):
            expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            urls = {  # a file id with a scheme is sent as the URL itself (file://…)
                key: file_id if "://" in file_id else f"{base}/blob/{file_id}"
                for key, file_id in names.items()
            }
            return _json(sock, 200, {"urls": urls, "expires": expires})
        if request.path.startswith("/blob/"):
            data = files[request.path.removeprefix("/blob/")]
            digest = hashlib.sha256(b"other bytes" if lie_digest else data).digest()
            headers = {
                "Content-Length": str(len(data)),
                "ETag": f'"{hashlib.sha256(data).hexdigest()[:16]}"',
                "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
                "Accept-Ranges": "bytes",
            }
            if request.method == "HEAD":
                return sock.sendall(head(200, headers))
            return sock.sendall(head(200, headers) + data)
        return _json(sock, 404, {"detail": "no such route", "code": "not_found"})

    return respond


def download(server: Any, dest: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", "tml-hostile-test-key")
    return invoke(["ckpt", "download", EXTERNAL, "-o", str(dest)])


def test_a_well_formed_map_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = {name: name for name in GOOD}
    with hostile(deployment(names, GOOD)) as server:
        result = download(server, tmp_path / "dest", monkeypatch)
    assert result.exit_code == 0, result.stderr
    got = tmp_path / "dest" / "e1"
    assert (got / "adapter_model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["e1"]


BAD_MAPS = {
    "parent": {"../evil": "adapter_config.json"},
    "absolute": {"/etc/evil": "adapter_config.json"},
    "nested": {"sub/evil": "adapter_config.json"},
    "backslash": {"..\\evil": "adapter_config.json"},
    "case": {"Adapter_Config.json": "adapter_config.json"},
    "manifest": {".logits-checkpoint.json": "adapter_config.json"},
    "many": {f"f{i}": "adapter_config.json" for i in range(1000)},
}


@pytest.mark.parametrize("bad", sorted(BAD_MAPS))
def test_hostile_names_are_refused_before_anything_is_written(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {name: name for name in GOOD} | BAD_MAPS[bad]
    if bad == "case":
        names = {
            "adapter_config.json": "adapter_config.json",
            "ADAPTER_CONFIG.json": "adapter_config.json",
            "adapter_model.safetensors": "adapter_model.safetensors",
        }
    dest = tmp_path / "dest"
    with hostile(deployment(names, GOOD)) as server:
        result = download(server, dest, monkeypatch)
        fetched = [r.path for r in server.requests if r.path.startswith("/blob/")]
    assert result.exit_code == 7, (bad, result.stderr)
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: ") and ("URL map" in error or "files" in error), error
    assert fetched == [] and not dest.exists()
    assert not (tmp_path / "evil").exists()


def test_an_encrypted_export_is_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {
        "adapter_config.json.age": "adapter_config.json",
        "adapter_model.safetensors.age": "adapter_model.safetensors",
    }
    with hostile(deployment(names, GOOD)) as server:
        result = download(server, tmp_path / "dest", monkeypatch)
    assert result.exit_code == 10, result.stderr
    assert "age-encrypted" in result.stderr and not (tmp_path / "dest").exists()


def test_bytes_that_do_not_match_their_digest_are_never_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {name: name for name in GOOD}
    dest = tmp_path / "dest"
    with hostile(deployment(names, GOOD, lie_digest=True)) as server:
        result = download(server, dest, monkeypatch)
    assert result.exit_code == 7, result.stderr
    assert "does not match its digest" in result.stderr
    assert not (dest / "e1").exists() and not list(dest.glob(".e1.files*"))


def test_a_file_that_is_not_an_adapter_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = GOOD | {"adapter_model.safetensors": b"\xff" * 64}
    names = {name: name for name in GOOD}
    dest = tmp_path / "dest"
    with hostile(deployment(names, files)) as server:
        result = download(server, dest, monkeypatch)
    assert result.exit_code == 7, result.stderr
    assert "not a readable safetensors file" in result.stderr
    assert not (dest / "e1").exists() and not list(dest.glob(".e1.files*"))


def _complete(files: dict[str, bytes], **changes: Any) -> bytes:
    listing = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()
    } | changes
    return json.dumps(
        {
            "checkpoint_type": "external",
            "created": "2026-12-01T00:00:00Z",
            "files": listing,
            "tinker_path": EXTERNAL,
        }
    ).encode()


@pytest.mark.parametrize("lie", [False, True])
def test_a_checkpoint_complete_manifest_is_checked(
    lie: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = {"adapter_config.json": {"sha256": "0" * 64, "size": len(CONFIG)}}
    files = GOOD | {"checkpoint_complete": _complete(GOOD, **(wrong if lie else {}))}
    names = {name: name for name in files}
    dest = tmp_path / "dest"
    with hostile(deployment(names, files)) as server:
        result = download(server, dest, monkeypatch)
    if not lie:
        assert result.exit_code == 0, result.stderr
        assert (dest / "e1" / "checkpoint_complete").is_file()
        return
    assert result.exit_code == 7, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: adapter_config.json: sha256 does not match checkpoint_complete"
    )
    assert not (dest / "e1").exists() and not list(dest.glob(".e1.files*"))


# -- issue 21 G6, G13: working files in DEST, long names, URLs we do not fetch ---------------

ONE_LINE = "logits did not make it and will not use it: remove it"


def _snapshot(directory: Path) -> dict[str, Any]:
    return {
        "mode": stat.S_IMODE(directory.stat().st_mode),
        "entries": {p.name: p.read_bytes() for p in sorted(directory.iterdir())},
    }


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    directory = tmp_path / "victim"
    directory.mkdir()
    directory.chmod(0o700)
    (directory / "secret").write_bytes(b"root's own bytes")
    return directory


def test_a_symlinked_part_directory_is_refused_and_its_target_untouched(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".e1.files").symlink_to(victim, target_is_directory=True)
    before = _snapshot(victim)
    with hostile(deployment({name: name for name in GOOD}, GOOD)) as server:
        result = download(server, dest, monkeypatch)
    assert result.exit_code == 1, result.stderr
    error = result.stderr.splitlines()[-1]
    assert f"{dest / '.e1.files'} is a symbolic link" in error and ONE_LINE in error
    assert _snapshot(victim) == before  # no journal/, no data/ in it
    assert sorted(p.name for p in dest.iterdir()) == [".e1.files"]


def test_another_users_part_directory_in_a_sticky_dest_is_refused(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack of G6: in a shared DEST, nobody makes ``.e1.files/data -> victim``; root's
    download wrote the adapter into the victim and changed its mode from 0700 to 0755."""
    if os.geteuid() != 0:
        pytest.skip("planting as another user needs root")
    dest = Path(tempfile.mkdtemp(prefix="logits-shared-", dir="/tmp"))
    try:
        dest.chmod(0o1777)
        script = f"cd {dest}; mkdir -m 777 .e1.files; ln -s {victim} .e1.files/data"
        subprocess.run(["/bin/sh", "-ec", script], user=65534, group=65534, check=True, timeout=30)
        before = _snapshot(victim)
        with hostile(deployment({name: name for name in GOOD}, GOOD)) as server:
            result = download(server, dest, monkeypatch)
        assert result.exit_code == 1, result.stderr
        error = result.stderr.splitlines()[-1]
        assert "owned by another user (uid 65534)" in error and ONE_LINE in error
        assert _snapshot(victim) == before
        assert not (dest / "e1").exists()
        assert sorted(p.name for p in dest.iterdir()) == [".e1.files"]
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.parametrize("length", [251, 255])
def test_a_file_name_of_up_to_255_bytes_downloads(
    length: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """G13: its journal was named ``NAME.json``, which does not fit; now a digest."""
    long_name = "w" * (length - len(".bin")) + ".bin"
    assert len(long_name.encode()) == length
    names = {name: name for name in GOOD} | {long_name: "adapter_config.json"}
    dest = tmp_path / "dest"
    with hostile(deployment(names, GOOD)) as server:
        result = download(server, dest, monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert (dest / "e1" / long_name).read_bytes() == CONFIG
    assert sorted(p.name for p in dest.iterdir()) == ["e1"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_a_url_we_do_not_fetch_is_refused_before_anything_is_written(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """G13: a ``file://`` entry left ``.NAME.files/`` behind."""
    names = {name: name for name in GOOD} | {"extra.json": url}
    dest = tmp_path / "dest"
    with hostile(deployment(names, GOOD)) as server:
        result = download(server, dest, monkeypatch)
        fetched = [r.path for r in server.requests if r.path.startswith("/blob/")]
    assert result.exit_code == 7, result.stderr
    error = result.stderr.splitlines()[-1]
    assert "'extra.json'" in error and "only http and https URLs are fetched" in error
    assert fetched == [] and not dest.exists()
