"""Every ``LogitsClient`` method against the real reference server, both over a socket
(uvicorn on 127.0.0.1) and embedded (the same app behind ``httpx.ASGITransport``)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from logits_cli import config, errors, models
from logits_cli.api import LogitsClient, open_client
from logits_cli.config import Settings
from logits_cli.uri import CheckpointRef

pytestmark = pytest.mark.anyio

BASE_MODEL = "logits/tiny"
RANK = 2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Backend:
    name: str
    settings: Settings
    store: Any  # logits_cli.store.Store over the same data, for bulk setup
    user: str

    def open(self) -> LogitsClient:
        return open_client(self.settings)


@pytest.fixture(params=["embedded", "socket"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "socket":
        server = request.getfixturevalue("live_server")
        yield Backend(
            "socket",
            remote_settings(tmp_path, server.base_url, server.api_key("alice")),
            server.store,
            "alice",
        )
        return
    from logits_cli.store import Store
    from logits_cli.store.store import LOCAL_USER

    settings = config.resolve(env={"LOGITS_HOME": str(tmp_path)})
    store = Store.open(settings.store_dir)
    try:
        yield Backend("embedded", settings, store, LOCAL_USER)
    finally:
        store.close()


def remote_settings(home: Path, base_url: str, key: str) -> Settings:
    return config.resolve(
        env={"LOGITS_HOME": str(home), "LOGITS_BASE_URL": base_url, "LOGITS_API_KEY": key}
    )


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[LogitsClient]:
    async with backend.open() as opened:
        yield opened


@pytest.fixture
async def run(client: LogitsClient) -> models.TrainingRun:
    return await client.create_run(BASE_MODEL, rank=RANK, seed=1)


def ref(run: models.TrainingRun, name: str, kind: str = "weights") -> CheckpointRef:
    return CheckpointRef(run.training_run_id, kind, name)


# -- service and runs ---------------------------------------------------------------------


async def test_health_and_capabilities(client: LogitsClient, backend: Backend) -> None:
    assert client.embedded is (backend.name == "embedded")
    assert (await client.health()).status == "ok"
    names = [m.model_name for m in (await client.capabilities()).supported_models]
    assert BASE_MODEL in names


async def test_runs_are_created_in_one_session_and_listed(
    client: LogitsClient, backend: Backend
) -> None:
    pending: list[float] = []
    created = [
        await client.create_run(
            BASE_MODEL, rank=RANK, user_metadata={"i": str(i)}, on_pending=pending.append
        )
        for i in range(3)
    ]
    session = created[0].training_run_id.rsplit(":train:", 1)[0]
    assert [r.training_run_id for r in created] == [f"{session}:train:{i}" for i in range(3)]
    first = created[0]
    assert (first.base_model, first.model_owner, first.lora_rank, first.is_lora) == (
        BASE_MODEL,
        backend.user,
        RANK,
        True,
    )
    assert first.user_metadata == {"i": "0"}
    assert first.last_checkpoint is None and first.last_sampler_checkpoint is None

    fetched = await client.get_run(first.training_run_id)
    assert fetched.training_run_id == first.training_run_id
    info = await client.get_info(first.training_run_id)
    assert (info.model_id, info.lora_rank, info.model_data.model_name) == (
        first.training_run_id,
        RANK,
        BASE_MODEL,
    )

    listed = [r.training_run_id async for r in client.iter_runs(page_size=2)]
    # Newest first; three pages of at most two.
    assert listed == [r.training_run_id for r in reversed(created)]
    accessible = [r.training_run_id async for r in client.iter_runs(access_scope="accessible")]
    assert sorted(accessible) == sorted(listed)


async def test_unknown_run(client: LogitsClient) -> None:
    with pytest.raises(errors.NotFoundError):
        await client.get_run("no-such-run")
    with pytest.raises(errors.NotFoundError):
        await client.list_checkpoints("no-such-run")
    with pytest.raises(errors.NotFoundError):
        await client.save("no-such-run", "x")
    with pytest.raises(errors.UsageError, match=r"forbidden character"):
        await client.get_run("a/b")


# -- checkpoints --------------------------------------------------------------------------


async def test_save_list_and_latest(client: LogitsClient, run: models.TrainingRun) -> None:
    run_id = run.training_run_id
    first = await client.save(run_id, "step-0001")
    second = await client.save(run_id, "step-0002", ttl_seconds=3600)
    sampler = await client.save(run_id, "final", sampler=True)

    assert first.checkpoint_type == "training" and sampler.checkpoint_type == "sampler"
    assert first.tinker_path == f"logits://{run_id}/weights/step-0001"
    assert sampler.tinker_path == f"logits://{run_id}/sampler_weights/final"
    assert first.size_bytes and first.size_bytes % 10240 == 0
    assert first.sha256 and len(first.sha256) == 64
    assert second.expires_at is not None
    assert timedelta(minutes=59) < second.expires_at - second.time <= timedelta(hours=1)

    listed = await client.list_checkpoints(run_id)
    assert [c.checkpoint_id for c in listed] == [
        "sampler_weights/final",
        "weights/step-0002",
        "weights/step-0001",
    ]
    latest = await client.resolve(ref(run, "@latest"))
    assert latest == ref(run, "step-0002")
    assert await client.resolve(ref(run, "step-0001")) == ref(run, "step-0001")
    assert (await client.get_checkpoint(ref(run, "@latest", "sampler_weights"))) == sampler
    assert (await client.get_checkpoint(ref(run, "step-0001"))) == first

    refreshed = await client.get_run(run_id)
    assert refreshed.last_checkpoint == second
    assert refreshed.last_sampler_checkpoint == sampler

    with pytest.raises(
        errors.NotFoundError, match=r"^checkpoint logits://.*/weights/nope not found$"
    ):
        await client.get_checkpoint(ref(run, "nope"))


async def test_latest_in_a_run_without_that_kind(
    client: LogitsClient, run: models.TrainingRun
) -> None:
    await client.save(run.training_run_id, "only-weights")
    with pytest.raises(
        errors.NotFoundError,
        match=f"^no sampler_weights checkpoints in run {run.training_run_id}$",
    ) as caught:
        await client.get_checkpoint(ref(run, "@latest", "sampler_weights"))
    assert caught.value.exit_code == errors.EXIT_NOT_FOUND


async def test_save_conflict_and_overwrite(client: LogitsClient, run: models.TrainingRun) -> None:
    run_id = run.training_run_id
    original = await client.save(run_id, "same")
    await client.publish(ref(run, "same"))
    with pytest.raises(errors.ConflictError) as caught:
        await client.save(run_id, "same")
    assert caught.value.exit_code == errors.EXIT_CONFLICT
    assert str(caught.value).startswith("save of weights/same failed: ")
    # Same name, other kind: no conflict.
    await client.save(run_id, "same", sampler=True)
    replaced = await client.save(run_id, "same", overwrite=True)
    assert replaced.time > original.time
    assert replaced.public is False


async def test_publish_and_unpublish_report_changes(
    client: LogitsClient, run: models.TrainingRun
) -> None:
    await client.save(run.training_run_id, "shared")
    target = ref(run, "shared")
    assert await client.publish(target) is True
    assert (await client.get_checkpoint(target)).public is True
    assert await client.publish(target) is False
    assert await client.unpublish(target) is True
    assert (await client.get_checkpoint(target)).public is False
    assert await client.unpublish(target) is False
    with pytest.raises(errors.NotFoundError):
        await client.publish(ref(run, "missing"))


async def test_ttl_set_and_remove(client: LogitsClient, run: models.TrainingRun) -> None:
    await client.save(run.training_run_id, "kept")
    target = ref(run, "kept")
    before = datetime.now(UTC)
    await client.set_ttl(target, 7200)
    after = datetime.now(UTC)
    expires = (await client.get_checkpoint(target)).expires_at
    assert expires is not None
    assert before + timedelta(seconds=7199) <= expires <= after + timedelta(seconds=7201)
    await client.set_ttl(target, None)
    assert (await client.get_checkpoint(target)).expires_at is None
    with pytest.raises(errors.UsageError):
        await client.set_ttl(target, -5)
    with pytest.raises(errors.NotFoundError):
        await client.set_ttl(ref(run, "missing"), 60)


async def test_delete(client: LogitsClient, run: models.TrainingRun) -> None:
    await client.save(run.training_run_id, "old")
    await client.save(run.training_run_id, "new")
    await client.delete(ref(run, "@latest"))
    assert [c.checkpoint_id for c in await client.list_checkpoints(run.training_run_id)] == [
        "weights/old"
    ]
    assert (
        await client.get_run(run.training_run_id)
    ).last_checkpoint.checkpoint_id == "weights/old"  # type: ignore[union-attr]
    with pytest.raises(errors.NotFoundError):
        await client.delete(ref(run, "new"))


async def test_load_and_weights_info(client: LogitsClient, run: models.TrainingRun) -> None:
    saved = await client.save(run.training_run_id, "resume")
    sampler = await client.save(run.training_run_id, "sample", sampler=True)
    other = await client.create_run(BASE_MODEL, rank=RANK)

    assert (
        await client.load(other.training_run_id, ref(run, "resume"), with_optimizer=True)
        == saved.tinker_path
    )
    # The legacy two-segment form means weights, and is sent in the three-segment form.
    legacy = CheckpointRef.parse(f"tinker://{run.training_run_id}/resume")
    assert await client.load(other.training_run_id, legacy) == saved.tinker_path
    assert (
        await client.load(other.training_run_id, ref(run, "@latest", "sampler_weights"))
        == sampler.tinker_path
    )
    with pytest.raises(errors.UsageError, match=r"holds no optimizer state"):
        await client.load(
            other.training_run_id, ref(run, "sample", "sampler_weights"), with_optimizer=True
        )

    info = await client.weights_info(ref(run, "resume"))
    assert (info.base_model, info.is_lora, info.lora_rank) == (BASE_MODEL, True, RANK)
    assert (info.train_attn, info.train_mlp, info.train_unembed) == (True, True, True)


async def test_load_incompatible_or_missing_checkpoint(
    client: LogitsClient, run: models.TrainingRun
) -> None:
    await client.save(run.training_run_id, "rank2")
    wider = await client.create_run(BASE_MODEL, rank=RANK * 2)
    with pytest.raises(errors.JobFailedError) as caught:
        await client.load(wider.training_run_id, ref(run, "rank2"))
    assert caught.value.failure_code == "invalid_argument"
    assert caught.value.category == "user"
    assert str(caught.value).startswith(f"load of {ref(run, 'rank2')} failed: ")
    with pytest.raises(errors.NotFoundError):
        await client.load(wider.training_run_id, ref(run, "missing"))


async def test_archive_url_serves_the_archive_through_blob_http(
    client: LogitsClient, run: models.TrainingRun, backend: Backend
) -> None:
    saved = await client.save(run.training_run_id, "fetch-me")
    answer = await client.archive_url(ref(run, "fetch-me"))
    expected_origin = (
        "http://logits-embedded.invalid/"
        if backend.name == "embedded"
        else backend.settings.base_url
    )
    assert answer.url.startswith(expected_origin or "")
    assert timedelta(minutes=14) < answer.expires - datetime.now(UTC) <= timedelta(minutes=15)
    response = await client.blob_http.get(answer.url)
    assert response.status_code == 200
    assert len(response.content) == saved.size_bytes
    assert hashlib.sha256(response.content).hexdigest() == saved.sha256
    assert response.headers["etag"] == f'"sha256:{saved.sha256}"'


async def test_download_delegates_to_the_transfer_engine(
    client: LogitsClient, run: models.TrainingRun, tmp_path: Path
) -> None:
    saved = await client.save(run.training_run_id, "wanted")
    result = await client.download(ref(run, "@latest"), tmp_path / "dest")
    assert result.checkpoint == saved
    assert result.path == tmp_path / "dest" / "wanted"
    assert (result.path / "adapter_model.safetensors").is_file()
    assert result.bytes_fetched == saved.size_bytes


def clone_checkpoint_rows(store_root: Path, run_ids: list[str], count: int) -> None:
    """Bulk setup: ``count`` copies of a real checkpoint row, spread over ``run_ids``, each
    newer than the last. Listings read only these rows, and building hundreds of archives
    would take the suite minutes."""
    with contextlib.closing(sqlite3.connect(store_root / "meta.sqlite3", timeout=30)) as db:
        user, kind, created, size, digest = db.execute(
            "SELECT user_id, kind, time, size_bytes, sha256 FROM checkpoints"
        ).fetchone()
        rows = [
            (run_ids[i % len(run_ids)], user, kind, f"c{i:04d}", created + 1 + i, size, digest)
            for i in range(count)
        ]
        with db:
            db.executemany(
                "INSERT INTO checkpoints (run_id, user_id, kind, name, tinker_path, time, "
                "public, size_bytes, sha256) "
                "VALUES (?1, ?2, ?3, ?4, 'logits://' || ?1 || '/' || ?3 || '/' || ?4, ?5, 0, ?6, ?7)",
                rows,
            )


async def test_paging_over_hundreds_of_checkpoints(client: LogitsClient, backend: Backend) -> None:
    runs = [await client.create_run(BASE_MODEL, rank=1) for _ in range(2)]
    run_ids = [r.training_run_id for r in runs]
    await client.save(run_ids[0], "seed", sampler=True)
    clone_checkpoint_rows(Path(backend.store.root), run_ids, 299)
    expected, total = backend.store.list_user_checkpoints(backend.user, limit=1000, offset=0)
    assert total == 300

    for page_size in (1000, 100, 7):
        paged = [c async for c in client.iter_all_checkpoints(page_size=page_size)]
        assert paged == expected, page_size
    assert paged[0].name == "c0298" and paged[-1].name == "seed"
    assert len(await client.list_checkpoints(run_ids[1])) == 149
    latest = await client.get_checkpoint(CheckpointRef(run_ids[0], "sampler_weights", "@latest"))
    assert latest.name == "c0298"


# -- socket-only: other users, JWT, prefixes, schemes -------------------------------------


async def test_other_users_see_public_checkpoints_only(live_server: Any, tmp_path: Path) -> None:
    alice = open_client(
        remote_settings(tmp_path, live_server.base_url, live_server.api_key("alice"))
    )
    bob = open_client(remote_settings(tmp_path, live_server.base_url, live_server.api_key("bob")))
    async with alice, bob:
        run = await alice.create_run(BASE_MODEL, rank=RANK)
        await alice.save(run.training_run_id, "secret")
        target = ref(run, "secret")
        with pytest.raises(errors.NotFoundError):
            await bob.list_checkpoints(run.training_run_id)
        with pytest.raises(errors.NotFoundError):
            await bob.archive_url(target)
        assert await alice.publish(target) is True
        assert [c.checkpoint_id for c in await bob.list_checkpoints(run.training_run_id)] == [
            "weights/secret"
        ]
        seen = await bob.get_run(run.training_run_id, access_scope="accessible")
        assert seen.model_owner == "alice"
        assert (await bob.weights_info(target)).lora_rank == RANK
        assert (await bob.archive_url(target)).url.startswith(live_server.base_url)
        bobs_run = await bob.create_run(BASE_MODEL, rank=RANK)
        assert (
            await bob.load(bobs_run.training_run_id, target)
            == f"logits://{run.training_run_id}/weights/secret"
        )
        for mutation in (bob.delete, bob.unpublish):
            with pytest.raises(errors.NotFoundError):
                await mutation(target)


async def test_bad_key_is_an_auth_error(live_server: Any, tmp_path: Path) -> None:
    settings = remote_settings(tmp_path, live_server.base_url, "tml-" + "0" * 43)
    async with open_client(settings) as client:
        assert (await client.health()).status == "ok"
        with pytest.raises(errors.AuthError) as caught:
            await client.list_checkpoints("any")
    assert caught.value.exit_code == errors.EXIT_AUTH
    assert caught.value.hint == "check LOGITS_API_KEY or LOGITS_API_KEY_CMD"
    assert "tml-" not in str(caught.value)


async def test_jwt_exchange_against_the_server(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = server_factory(jwt_auth=True)
    async with open_client(
        remote_settings(tmp_path, server.base_url, server.api_key("carol"))
    ) as client:
        run = await client.create_run(BASE_MODEL, rank=RANK)
        saved = await client.save(run.training_run_id, "jwt")
        assert (await client.get_checkpoint(ref(run, "@latest"))) == saved
        assert client._layer._jwt is not None  # the JWT, not the key, went out


async def test_path_prefix_and_tinker_scheme(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = server_factory(root_path="/services/logits", uri_scheme="tinker")
    assert server.base_url.endswith("/services/logits")
    async with open_client(
        remote_settings(tmp_path, server.base_url, server.api_key("dan"))
    ) as client:
        run = await client.create_run(BASE_MODEL, rank=RANK)
        saved = await client.save(run.training_run_id, "prefixed")
        assert saved.tinker_path == f"tinker://{run.training_run_id}/weights/prefixed"
        answer = await client.archive_url(CheckpointRef.parse(saved.tinker_path))
        assert answer.url.startswith(server.base_url + "/api/v1/blobs/")
        fetched = await client.blob_http.get(answer.url)
        assert hashlib.sha256(fetched.content).hexdigest() == saved.sha256
