"""The team server's blobs on an S3-compatible store (store/object_store.py).

Real processes (``logits server start --database … --blobs s3://…``), a real PostgreSQL and
a real S3 API server (moto_server, tests/services.py), the real CLI as the client. Two
server processes with separate ``--home`` directories stand for two machines: what one
saved, the other serves and loads, the bytes coming from the object store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from test_team_server import assert_finished_by, save_killed_halfway, server_process

from tests.services import S3_ENV


@pytest.fixture
def team_s3(
    postgres_server: Any, s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    from logits_cli.store.store import Store

    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server.endpoint_url}.items():
        monkeypatch.setenv(name, value)
    database = postgres_server.new_database()
    blobs = s3_server.new_prefix()
    store = Store.open(tmp_path / "keys" / "store", database=database)
    try:
        key = store.create_api_key("alice")
    finally:
        store.close()
    return {"database": database, "blobs": blobs, "key": key, "s3": s3_server}


def logits(base_url: str, key: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LOGITS_BASE_URL": base_url,
        "LOGITS_API_KEY": key,
        "LOGITS_HOME": str(home),
    }
    return subprocess.run(
        [sys.executable, "-m", "logits_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def new_run(base_url: str, key: str, home: Path) -> str:
    """A fresh ``logits/tiny`` run through the CLI; its id."""
    return ok(
        logits(base_url, key, home, "runs", "create", "--base-model", "logits/tiny", "--rank", "2")
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def objects(team: dict[str, Any], area: str) -> dict[str, dict[str, Any]]:
    import boto3

    bucket, _, prefix = team["blobs"].removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=team["s3"].endpoint_url)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{area}/")
    return {
        entry["Key"].rsplit("/", 1)[1]: client.head_object(
            Bucket=bucket, Key=entry["Key"], ChecksumMode="ENABLED"
        )
        for entry in listed.get("Contents", [])
    }


def test_saves_land_in_the_bucket_and_download_from_presigned_urls(
    team_s3: dict[str, Any], tmp_path: Path
) -> None:
    team = team_s3
    with server_process(tmp_path / "one", team["database"], "--blobs", team["blobs"]) as (
        served,
        _,
    ):
        client = tmp_path / "client"
        run = new_run(served.base_url, team["key"], client)
        path = ok(logits(served.base_url, team["key"], client, "ckpt", "save", "s1", "--run", run))
        info = json.loads(
            ok(logits(served.base_url, team["key"], client, "ckpt", "info", path, "--json"))
        )
        stored = objects(team, "blobs")
        assert list(stored) == [info["sha256"]]
        assert stored[info["sha256"]]["ContentLength"] == info["size_bytes"]
        assert stored[info["sha256"]]["Metadata"] == {"sha256": info["sha256"]}
        # The store verified the upload against the SHA-256 checksum we sent with it.
        assert base64.b64decode(stored[info["sha256"]]["ChecksumSHA256"]).hex() == info["sha256"]

        url = ok(logits(served.base_url, team["key"], client, "ckpt", "url", path))
        assert urlsplit(url).netloc == urlsplit(team["s3"].endpoint_url).netloc  # not our port
        out = ok(
            logits(
                served.base_url,
                team["key"],
                client,
                "ckpt",
                "download",
                path,
                "-o",
                str(tmp_path / "dl"),
            )
        )
        assert out == str(tmp_path / "dl" / "s1")
        manifest = json.loads((tmp_path / "dl" / "s1" / ".logits-checkpoint.json").read_text())
        assert manifest["archive_sha256"] == info["sha256"]
        ok(
            logits(
                served.base_url, team["key"], client, "ckpt", "verify", str(tmp_path / "dl" / "s1")
            )
        )

        ok(logits(served.base_url, team["key"], client, "ckpt", "rm", path, "--yes"))
        assert objects(team, "blobs") == {}  # no row references it: gone from the bucket


def test_another_machine_serves_and_loads_what_one_saved(
    team_s3: dict[str, Any], tmp_path: Path
) -> None:
    team = team_s3
    blobs = ("--blobs", team["blobs"])
    with (
        server_process(tmp_path / "one", team["database"], *blobs) as (one, _),
        server_process(tmp_path / "two", team["database"], *blobs) as (two, _),
    ):
        client = tmp_path / "client"
        run = new_run(one.base_url, team["key"], client)
        path = ok(logits(one.base_url, team["key"], client, "ckpt", "save", "s2", "--run", run))
        # Machine two has never seen the bytes: it presigns from the bucket ...
        out = ok(
            logits(
                two.base_url,
                team["key"],
                client,
                "ckpt",
                "download",
                path,
                "-o",
                str(tmp_path / "dl"),
            )
        )
        digest = hashlib.sha256((Path(out) / "adapter_model.safetensors").read_bytes())
        # ... and restores it into a run of its own from its cache, filled from the bucket.
        other = new_run(two.base_url, team["key"], client)
        ok(logits(two.base_url, team["key"], client, "ckpt", "load", path, "--run", other))
        assert (tmp_path / "two" / "store" / "blobs").is_dir()
        copy = ok(logits(two.base_url, team["key"], client, "ckpt", "save", "s3", "--run", other))
        again = ok(
            logits(
                one.base_url,
                team["key"],
                client,
                "ckpt",
                "download",
                copy,
                "-o",
                str(tmp_path / "dl2"),
            )
        )
        assert hashlib.sha256(
            (Path(again) / "adapter_model.safetensors").read_bytes()
        ).digest() == (digest.digest())

        # Each machine keeps its own live state: a save through the machine that did not
        # make the state rebuilds it from what the run's row records. The fresh run of one,
        # through two: the same adapter drawn again from the recorded seed ...
        drawn = ok(logits(two.base_url, team["key"], client, "ckpt", "save", "d", "--run", run))
        assert adapter_digest(two.base_url, team, client, drawn, tmp_path / "dl3") == (
            digest.hexdigest()
        )
        # ... and the run two loaded, through one, after the loaded checkpoint is deleted:
        # its archive stays in the bucket while the run's state names it.
        source_sha = checkpoint_sha256(one.base_url, team, client, path)
        ok(logits(one.base_url, team["key"], client, "ckpt", "rm", path, "--yes"))
        assert source_sha in objects(team, "blobs")
        loaded = ok(logits(one.base_url, team["key"], client, "ckpt", "save", "l", "--run", other))
        assert adapter_digest(one.base_url, team, client, loaded, tmp_path / "dl4") == (
            digest.hexdigest()
        )


def adapter_digest(base_url: str, team: dict[str, Any], home: Path, path: str, out: Path) -> str:
    """sha256 of the adapter_model.safetensors of checkpoint ``path``, downloaded to ``out``."""
    directory = ok(logits(base_url, team["key"], home, "ckpt", "download", path, "-o", str(out)))
    return hashlib.sha256((Path(directory) / "adapter_model.safetensors").read_bytes()).hexdigest()


def checkpoint_sha256(base_url: str, team: dict[str, Any], home: Path, path: str) -> str:
    info = json.loads(ok(logits(base_url, team["key"], home, "ckpt", "info", path, "--json")))
    return str(info["sha256"])


def test_a_save_killed_on_one_machine_is_finished_on_another(
    team_s3: dict[str, Any], tmp_path: Path
) -> None:
    """Two machines (own --home each): the killed process's liveness lock lives in
    PostgreSQL, so the other sees it dead, and rebuilds the run's state to finish the save."""
    from server_helpers import Api

    team = team_s3
    blobs = ("--blobs", team["blobs"])
    with (
        server_process(tmp_path / "one", team["database"], *blobs) as (one, first),
        server_process(tmp_path / "two", team["database"], *blobs) as (two, _),
    ):
        api_one, api_two = Api(one, team["key"]), Api(two, team["key"])
        model_id, handle = save_killed_halfway(api_one, first, tmp_path / "one/store/blobs")
        assert_finished_by(api_two, handle, model_id)
        rebuilt = tmp_path / "two" / "store" / "runs" / quote(model_id, safe="") / ".state-key"
        assert rebuilt.is_file()  # two drew the run's state again from its recorded seed
        api_one.http.close()
        api_two.http.close()


def test_files_generation_exports_are_served_from_the_bucket(
    team_s3: dict[str, Any], tmp_path: Path
) -> None:
    team = team_s3
    with server_process(
        tmp_path / "one", team["database"], "--blobs", team["blobs"], "--downloads", "files"
    ) as (served, _):
        client = tmp_path / "client"
        run = new_run(served.base_url, team["key"], client)
        path = ok(logits(served.base_url, team["key"], client, "ckpt", "save", "f1", "--run", run))
        out = ok(
            logits(
                served.base_url,
                team["key"],
                client,
                "ckpt",
                "download",
                path,
                "-o",
                str(tmp_path / "dl"),
            )
        )
        exported = objects(team, "exports")
        assert len(exported) == 2  # adapter_config.json and adapter_model.safetensors
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            digest = hashlib.sha256((Path(out) / name).read_bytes()).hexdigest()
            assert digest in exported


def embedded(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGITS_")}
    env["LOGITS_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "logits_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_moves_a_single_machine_store_onto_postgresql_and_s3(
    team_s3: dict[str, Any], tmp_path: Path
) -> None:
    team = team_s3
    home = tmp_path / "home"
    # A store used the single-machine way: the embedded backend (user "local").
    run = ok(embedded(home, "runs", "create", "--base-model", "logits/tiny", "--rank", "2"))
    saved = [
        ok(embedded(home, "ckpt", "save", "m1", "--run", run)),
        ok(embedded(home, "ckpt", "save", "m2", "--sampler", "--run", run)),
    ]
    digests = {
        path: json.loads(ok(embedded(home, "ckpt", "info", path, "--json")))["sha256"]
        for path in saved
    }
    # A run loaded from a checkpoint deleted since: a local store keeps no copy of it.
    loaded = ok(embedded(home, "runs", "create", "--base-model", "logits/tiny", "--rank", "2"))
    gone = ok(embedded(home, "ckpt", "save", "gone", "--run", loaded))
    ok(embedded(home, "ckpt", "load", gone, "--run", loaded))
    ok(embedded(home, "ckpt", "rm", gone, "--yes"))
    key = ok(embedded(home, "server", "keys", "create", "local", "--home", str(home)))
    # And a run made before schema 6: nothing records its state but its directory.
    with sqlite3.connect(home / "store" / "meta.sqlite3") as meta:
        meta.execute("UPDATE runs SET state_seed = NULL WHERE id = ?", (run,))
    live_adapters = {
        run_id: hashlib.sha256(
            (
                home / "store" / "runs" / quote(run_id, safe="") / "adapter_model.safetensors"
            ).read_bytes()
        ).hexdigest()
        for run_id in (run, loaded)
    }

    target = ("--to-database", team["database"], "--to-blobs", team["blobs"])
    done = embedded(home, "server", "migrate", *target, "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("Migrated 2 runs, 2 checkpoints and 1 API key; uploaded 2 blobs")
    assert "; archived the live state of 2 runs\n" in done.stderr
    assert " (any --home)." in done.stderr
    assert set(digests.values()) < set(objects(team, "blobs"))  # and the archived state

    with server_process(home, team["database"], "--blobs", team["blobs"]) as (served, _):
        client = tmp_path / "client"
        listed = ok(logits(served.base_url, key, client, "ckpt", "ls", "-q")).splitlines()
        assert sorted(listed) == sorted(saved)
        for path, sha256 in digests.items():
            out = ok(
                logits(
                    served.base_url,
                    key,
                    client,
                    "ckpt",
                    "download",
                    path,
                    "-o",
                    str(tmp_path / "dl"),
                )
            )
            manifest = json.loads((Path(out) / ".logits-checkpoint.json").read_text())
            assert manifest["archive_sha256"] == sha256  # the same bytes, from the bucket
        # Saves go on after the copied ids.
        ok(logits(served.base_url, key, client, "ckpt", "save", "m3", "--run", run))
    # A machine that never had the run's directory rebuilds its state from the archive.
    with server_process(tmp_path / "elsewhere", team["database"], "--blobs", team["blobs"]) as (
        served,
        _,
    ):
        for run_id, live_adapter in live_adapters.items():
            saved = ok(logits(served.base_url, key, client, "ckpt", "save", "m4", "--run", run_id))
            out = tmp_path / "dl-elsewhere" / quote(run_id, safe="")
            assert adapter_digest(served.base_url, {"key": key}, client, saved, out) == (
                live_adapter
            )

    again = embedded(home, "server", "migrate", *target, "--home", str(home))
    assert again.returncode == 2
    assert again.stderr.splitlines()[0].startswith("Error: the target database already holds")


def test_the_local_blob_cache_is_trimmed_and_refilled_from_the_bucket(
    team_s3: dict[str, Any], tmp_path: Path
) -> None:
    from logits_cli.store.store import Store

    team = team_s3
    home = tmp_path / "one"
    with server_process(home, team["database"], "--blobs", team["blobs"]) as (served, _):
        client = tmp_path / "client"
        run = new_run(served.base_url, team["key"], client)
        path = ok(logits(served.base_url, team["key"], client, "ckpt", "save", "c1", "--run", run))
        (cached,) = (home / "store" / "blobs").iterdir()
        old = time.time() - 2 * 3600  # past the grace period
        os.utime(cached, (old, old))
        store = Store.open(home / "store", database=team["database"], blobs=team["blobs"])
        try:
            store.sweep()
        finally:
            store.close()
        assert not cached.exists()  # the cache let go of it ...
        assert list(objects(team, "blobs")) == [cached.name]  # ... the bucket did not
        other = new_run(served.base_url, team["key"], client)
        ok(logits(served.base_url, team["key"], client, "ckpt", "load", path, "--run", other))
        assert cached.is_file()  # refilled from the bucket for the load


def test_migrate_refuses_targets_that_are_not_postgresql_or_s3(tmp_path: Path) -> None:
    for target, message in (
        (("--to-database", "mysql://x@y/z"), "Error: --to-database must be a postgresql:// URL"),
        (
            ("--to-database", "postgresql://x@y/z", "--to-blobs", "gs://b"),
            "Error: --to-blobs must be an s3://BUCKET[/PREFIX] URL",
        ),
    ):
        done = embedded(tmp_path, "server", "migrate", *target)
        assert done.returncode == 2 and done.stderr.splitlines() == [message]
