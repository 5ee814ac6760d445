"""``run_sync`` against the real server: embedded, and served over HTTP.

Every scenario opens a real client, creates runs on the "logits/tiny" base model, saves real
checkpoints, and syncs into a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import filelock
import pytest

from logits_cli import config, models
from logits_cli.api import LogitsClient, open_client
from logits_cli.api.sync import (
    LOCK_NAME,
    SyncItem,
    SyncOptions,
    SyncSummary,
    checkpoint_dir,
    is_current,
    read_own_manifest,
    run_dirname,
    run_sync,
)
from logits_cli.api.verify import MANIFEST_NAME, verify_checkpoint_dir
from logits_cli.errors import BusyError, NotFoundError, UsageError
from logits_cli.uri import CheckpointRef

Scenario = Callable[[LogitsClient], Awaitable[Any]]


@pytest.fixture(params=["embedded", "served"])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], LogitsClient]:
    """A factory of clients on one backend; the served one talks HTTP to a real server."""
    if request.param == "embedded":
        settings = config.resolve()
    else:
        live = request.getfixturevalue("live_server")
        settings = config.resolve(
            base_url=live.base_url,
            env={
                "LOGITS_HOME": str(tmp_path / "client-home"),
                "LOGITS_API_KEY": live.api_key("alice"),
            },
        )
    return lambda: open_client(settings)


@pytest.fixture
def embedded() -> Callable[[], LogitsClient]:
    settings = config.resolve()
    return lambda: open_client(settings)


def play(open_client_: Callable[[], LogitsClient], scenario: Scenario) -> Any:
    async def main() -> Any:
        async with open_client_() as client:
            return await scenario(client)

    return asyncio.run(main())


async def new_run(client: LogitsClient) -> str:
    return (await client.create_run("logits/tiny", rank=4)).training_run_id


def by_status(summary: SyncSummary) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for item in summary.items:
        checkpoint_id = CheckpointRef.parse(item.tinker_path).checkpoint_id
        grouped.setdefault(item.status, []).append(checkpoint_id)
    return {status: sorted(paths) for status, paths in grouped.items()}


def test_first_sync_fetches_everything_and_a_rerun_fetches_nothing(open_backend, tmp_path):
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        saved = [
            await client.save(run, "step-1"),
            await client.save(run, "step-2"),
            await client.save(run, "sample-2", sampler=True),
        ]
        logged: list[SyncItem] = []
        first = await run_sync(client, dest, SyncOptions(), on_item=logged.append)
        assert by_status(first) == {
            "downloaded": ["sampler_weights/sample-2", "weights/step-1", "weights/step-2"]
        }
        assert first.bytes_fetched == sum(c.size_bytes for c in saved)
        assert not first.incomplete
        assert sorted(item.tinker_path for item in logged) == sorted(c.tinker_path for c in saved)
        for checkpoint in saved:
            ref = CheckpointRef.parse(checkpoint.tinker_path)
            local = checkpoint_dir(dest, ref)
            assert local == dest / run_dirname(run) / ref.kind / ref.name
            assert read_own_manifest(local).archive_sha256 == checkpoint.sha256
            assert verify_checkpoint_dir(local).ok

        again = await run_sync(client, dest, SyncOptions())
        assert by_status(again) == {
            "present": ["sampler_weights/sample-2", "weights/step-1", "weights/step-2"]
        }
        assert again.bytes_fetched == 0
        assert not again.incomplete

    play(open_backend, scenario)


def test_a_new_checkpoint_is_the_only_one_fetched(open_backend, tmp_path):
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        await client.save(run, "step-1")
        await run_sync(client, dest, SyncOptions(runs=(run,)))
        added = await client.save(run, "step-2")
        reports: list[tuple[str, int, int | None]] = []
        summary = await run_sync(
            client,
            dest,
            SyncOptions(runs=(run,)),
            progress=lambda path, done, total: reports.append((path, done, total)),
        )
        assert {path for path, _, _ in reports} == {added.tinker_path}
        assert reports[-1] == (added.tinker_path, added.size_bytes, added.size_bytes)
        assert by_status(summary) == {
            "downloaded": ["weights/step-2"],
            "present": ["weights/step-1"],
        }
        assert summary.bytes_fetched == added.size_bytes

    play(open_backend, scenario)


def test_a_checkpoint_overwritten_remotely_is_replaced(embedded, tmp_path):
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        await client.save(run, "step-1")
        await run_sync(client, dest, SyncOptions())
        replaced = await client.save(run, "step-1", overwrite=True)
        summary = await run_sync(client, dest, SyncOptions())
        assert by_status(summary) == {"downloaded": ["weights/step-1"]}
        local = checkpoint_dir(dest, CheckpointRef.parse(replaced.tinker_path))
        assert read_own_manifest(local).archive_sha256 == replaced.sha256
        assert verify_checkpoint_dir(local).ok
        assert [p.name for p in local.parent.iterdir()] == ["step-1"]  # nothing left aside

    play(embedded, scenario)


def test_kind_latest_and_since_select_what_is_fetched(embedded, tmp_path):
    async def scenario(client: LogitsClient) -> None:
        run_a, run_b = await new_run(client), await new_run(client)
        saved = {}
        for run, label in ((run_a, "a"), (run_b, "b")):
            for step in range(1, 4):
                saved[f"{label}{step}"] = await client.save(run, f"step-{step}")
            saved[f"{label}s"] = await client.save(run, "sample", sampler=True)

        latest = await run_sync(client, tmp_path / "latest", SyncOptions(kind="weights", latest=2))
        assert sorted(i.tinker_path for i in latest.items) == sorted(
            saved[k].tinker_path for k in ("a2", "a3", "b2", "b3")
        )
        sampler = await run_sync(client, tmp_path / "sampler", SyncOptions(kind="sampler"))
        assert sorted(i.tinker_path for i in sampler.items) == sorted(
            saved[k].tinker_path for k in ("as", "bs")
        )
        since = await run_sync(
            client, tmp_path / "since", SyncOptions(runs=(run_b,), since=saved["b2"].time)
        )
        assert sorted(i.tinker_path for i in since.items) == sorted(
            saved[k].tinker_path for k in ("b2", "b3", "bs")
        )
        # Newest first, so a --max-duration cut keeps the fresh checkpoints.
        assert [i.tinker_path for i in since.items] == [
            saved[k].tinker_path for k in ("bs", "b3", "b2")
        ]

    play(embedded, scenario)


def test_dry_run_plans_and_writes_nothing(embedded, tmp_path):
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        await client.save(run, "step-1")
        planned = await run_sync(client, dest, SyncOptions(dry_run=True))
        assert by_status(planned) == {"planned": ["weights/step-1"]}
        assert not dest.exists()
        assert planned.to_json()["dry_run"] is True

        await run_sync(client, dest, SyncOptions())
        await client.save(run, "step-2")
        planned = await run_sync(client, dest, SyncOptions(dry_run=True))
        assert by_status(planned) == {"planned": ["weights/step-2"], "present": ["weights/step-1"]}
        assert not checkpoint_dir(dest, CheckpointRef(run, "weights", "step-2")).exists()

    play(embedded, scenario)


def test_prune_local_removes_only_our_downloads_that_are_gone(embedded, tmp_path):
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run_a, run_b = await new_run(client), await new_run(client)
        for run in (run_a, run_b):
            await client.save(run, "keep")
            await client.save(run, "gone")
        await run_sync(client, dest, SyncOptions())
        for run in (run_a, run_b):
            await client.delete(CheckpointRef(run, "weights", "gone"))

        kind_dir = dest / run_dirname(run_a) / "weights"
        handmade = kind_dir / "handmade"  # no manifest: never ours
        handmade.mkdir()
        (handmade / "notes.txt").write_text("mine")
        moved = dest / "elsewhere" / "weights" / "copy"  # our manifest, not where sync puts it
        moved.mkdir(parents=True)
        (moved / MANIFEST_NAME).write_bytes((kind_dir / "gone" / MANIFEST_NAME).read_bytes())

        plan = await run_sync(client, dest, SyncOptions(prune_local=True, dry_run=True))
        prunes = [i for i in plan.items if i.action == "prune"]
        assert sorted((i.status, i.local_path) for i in prunes) == sorted(
            ("planned", str(dest / run_dirname(run) / "weights" / "gone")) for run in (run_a, run_b)
        )
        assert (kind_dir / "gone").is_dir()

        # Only run_b is listed, so only run_b's copy may go.
        scoped = await run_sync(client, dest, SyncOptions(runs=(run_b,), prune_local=True))
        assert [(i.status, i.tinker_path) for i in scoped.items if i.action == "prune"] == [
            ("pruned", str(CheckpointRef(run_b, "weights", "gone")))
        ]
        assert not (dest / run_dirname(run_b) / "weights" / "gone").exists()
        assert (kind_dir / "gone").is_dir()

        everything = await run_sync(client, dest, SyncOptions(prune_local=True))
        assert by_status(everything) == {
            "present": ["weights/keep", "weights/keep"],
            "pruned": ["weights/gone"],
        }
        assert not (kind_dir / "gone").exists()
        assert (handmade / "notes.txt").read_text() == "mine"
        assert (moved / MANIFEST_NAME).is_file()
        assert (kind_dir / "keep" / MANIFEST_NAME).is_file()

    play(embedded, scenario)


def test_max_duration_reports_what_was_not_started(embedded, tmp_path):
    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        await client.save(run, "step-1")
        await client.save(run, "step-2")
        summary = await run_sync(client, tmp_path / "mirror", SyncOptions(max_duration=0))
        assert by_status(summary) == {"not_started": ["weights/step-1", "weights/step-2"]}
        assert summary.incomplete
        assert summary.counts()["not_started"] == 2

    play(embedded, scenario)


def test_a_directory_that_is_not_ours_fails_that_item_and_is_left_alone(embedded, tmp_path):
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        await client.save(run, "step-1")
        await client.save(run, "step-2")
        squatter = checkpoint_dir(dest, CheckpointRef(run, "weights", "step-1"))
        squatter.mkdir(parents=True)
        (squatter / "mine.bin").write_bytes(b"x")
        summary = await run_sync(client, dest, SyncOptions())
        assert by_status(summary) == {
            "downloaded": ["weights/step-2"],
            "failed": ["weights/step-1"],
        }
        failed = next(i for i in summary.items if i.status == "failed")
        assert (
            failed.error == f"{squatter} exists and is not this checkpoint's download; move it away"
        )
        assert summary.incomplete
        assert sorted(p.name for p in squatter.iterdir()) == ["mine.bin"]

    play(embedded, scenario)


def test_a_held_lock_is_busy_or_waited_for(embedded, tmp_path):
    dest = tmp_path / "mirror"
    dest.mkdir()
    holder = filelock.FileLock(dest / LOCK_NAME)

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        await client.save(run, "step-1")
        holder.acquire()
        with pytest.raises(BusyError, match="another sync is running in"):
            await run_sync(client, dest, SyncOptions())
        waiting = asyncio.ensure_future(run_sync(client, dest, SyncOptions(lock_wait=60)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        holder.release()
        summary = await waiting
        assert by_status(summary) == {"downloaded": ["weights/step-1"]}

    play(embedded, scenario)


def test_unknown_run_and_bad_options_raise_and_release_the_lock(embedded, tmp_path):
    async def scenario(client: LogitsClient) -> None:
        with pytest.raises(NotFoundError):
            await run_sync(client, tmp_path / "m", SyncOptions(runs=("no-such-run",)))
        after_error = await run_sync(client, tmp_path / "m", SyncOptions())
        assert after_error.items == []
        for bad in (
            SyncOptions(jobs=0),
            SyncOptions(latest=0),
            SyncOptions(kind="optimizer"),
            SyncOptions(runs=("a/b",)),
        ):
            with pytest.raises(UsageError):
                await run_sync(client, tmp_path / "m", bad)

    play(embedded, scenario)


def test_summary_json_shape(embedded, tmp_path):
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> dict[str, Any]:
        run = await new_run(client)
        checkpoint = await client.save(run, "step-1")
        summary = await run_sync(client, dest, SyncOptions())
        return {"summary": summary.to_json(), "checkpoint": checkpoint}

    result = play(embedded, scenario)
    data, checkpoint = result["summary"], result["checkpoint"]
    assert isinstance(data.pop("elapsed_s"), float)
    assert data == {
        "dest": str(dest),
        "dry_run": False,
        "counts": {
            "planned": 0,
            "downloaded": 1,
            "present": 0,
            "skipped": 0,
            "failed": 0,
            "not_started": 0,
            "pruned": 0,
        },
        "bytes_fetched": checkpoint.size_bytes,
        "not_exported": 0,
        "items": [
            {
                "tinker_path": checkpoint.tinker_path,
                "status": "downloaded",
                "bytes_fetched": checkpoint.size_bytes,
                "local_path": str(
                    checkpoint_dir(dest, CheckpointRef.parse(checkpoint.tinker_path))
                ),
                "error": None,
                "action": "download",
                "repaired": [],
                "needs_export": False,
            }
        ],
    }


def test_run_directories_are_filesystem_safe_and_distinct():
    assert run_dirname("5f1e3c2a:train:0") == "5f1e3c2a%3Atrain%3A0"
    assert run_dirname("..") == "%2E."
    assert run_dirname(".logits-sync.lock") == "%2Elogits-sync.lock"
    assert run_dirname("a:b") != run_dirname("a_b")
    assert os.sep not in run_dirname("r\\u")


def test_without_a_listed_digest_creation_time_and_size_decide_presence():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    path = "tinker://r:train:0/weights/step-1"
    manifest = models.LocalManifest(
        tinker_path=path,
        checkpoint_id="weights/step-1",
        checkpoint_type="training",
        archive_sha256="ab" * 32,
        archive_size=10,
        created=created,
        downloaded_at=created,
        files={},
    )

    def listed(**changes: Any) -> models.Checkpoint:
        fields = {
            "checkpoint_id": "weights/step-1",
            "checkpoint_type": "training",
            "time": created,
            "tinker_path": path.replace("tinker", "logits"),
            "size_bytes": 10,
            "sha256": None,
        }
        return models.Checkpoint(**(fields | changes))

    assert is_current(manifest, listed())
    assert is_current(manifest, listed(size_bytes=None))
    assert not is_current(manifest, listed(time=created + timedelta(seconds=1)))
    assert not is_current(manifest, listed(size_bytes=11))
    assert not is_current(manifest, listed(sha256="cd" * 32))
    assert is_current(manifest, listed(sha256="ab" * 32, time=created + timedelta(days=1)))


def test_tinker_scheme_paths_sync_and_prune_like_logits_ones(server_factory, tmp_path):
    live = server_factory(uri_scheme="tinker")
    settings = config.resolve(
        base_url=live.base_url,
        env={"LOGITS_HOME": str(tmp_path / "home"), "LOGITS_API_KEY": live.api_key("alice")},
    )
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        kept = await client.save(run, "kept")
        gone = await client.save(run, "gone")
        assert kept.tinker_path.startswith("tinker://")
        first = await run_sync(client, dest, SyncOptions())
        assert by_status(first) == {"downloaded": ["weights/gone", "weights/kept"]}
        await client.delete(CheckpointRef.parse(gone.tinker_path))
        again = await run_sync(client, dest, SyncOptions(prune_local=True))
        assert [(i.status, i.tinker_path) for i in again.items] == [
            ("pruned", gone.tinker_path),
            ("present", kept.tinker_path),
        ]

    play(lambda: open_client(settings), scenario)


def test_a_damaged_local_copy_is_repaired_not_reported_present(open_backend, tmp_path):
    # Issue 8 F8: names and sizes from our manifest, checked on every run without re-hashing.
    dest = tmp_path / "mirror"

    async def scenario(client: LogitsClient) -> None:
        run = await new_run(client)
        deleted, truncated, intact = [
            await client.save(run, name) for name in ("step-1", "step-2", "step-3")
        ]
        await run_sync(client, dest, SyncOptions())
        local = {
            c.tinker_path: checkpoint_dir(dest, CheckpointRef.parse(c.tinker_path))
            for c in (deleted, truncated, intact)
        }
        (local[deleted.tinker_path] / "adapter_config.json").unlink()
        tensors = local[truncated.tinker_path] / "adapter_model.safetensors"
        size = tensors.stat().st_size
        with open(tensors, "r+b") as handle:
            handle.truncate(size - 1)

        plan = await run_sync(client, dest, SyncOptions(dry_run=True))
        assert {i.tinker_path: (i.status, i.repaired) for i in plan.items} == {
            deleted.tinker_path: ("planned", ["adapter_config.json missing"]),
            truncated.tinker_path: (
                "planned",
                [f"adapter_model.safetensors has {size - 1} bytes, expected {size}"],
            ),
            intact.tinker_path: ("present", []),
        }
        repaired = await run_sync(client, dest, SyncOptions())
        assert {i.tinker_path: i.status for i in repaired.items} == {
            deleted.tinker_path: "downloaded",
            truncated.tinker_path: "downloaded",
            intact.tinker_path: "present",
        }
        assert repaired.bytes_fetched == deleted.size_bytes + truncated.size_bytes
        assert all(verify_checkpoint_dir(path).ok for path in local.values())
        again = await run_sync(client, dest, SyncOptions())
        assert {i.status for i in again.items} == {"present"}

    play(open_backend, scenario)
