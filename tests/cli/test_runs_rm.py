"""``logits runs rm`` (issue 23 point 8): the real CLI against the embedded backend and a real
server over 127.0.0.1 (``cli``), the team server's store on PostgreSQL and S3
(``server_factory`` on both back ends), a deployment without run deletion (exit 10), and
the prompt on a terminal."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import quote

import pytest

from logits_cli.cli.tables import human_size
from tests.cli.conftest import Cli, invoke
from tests.hostile_server import Request, Responder, head, hostile

# server_factory's tests run on SQLite + a directory and on PostgreSQL + S3.
TEAM_BACKENDS = True


def sizes(cli: Cli, run_id: str) -> int:
    listing = json.loads(cli.ok("ckpt", "ls", run_id, "--json").stdout)
    return sum(c["size_bytes"] for c in listing)


def test_a_run_with_checkpoints_is_refused_then_deleted_with_them(cli: Cli, run: str) -> None:
    cli.ok("ckpt", "save", "w1")
    cli.ok("ckpt", "save", "s1", "--sampler")
    size = human_size(sizes(cli, run))
    for extra in ((), ("--dry-run",)):
        refused = cli("runs", "rm", run, "--yes", *extra)
        assert refused.exit_code == 5, refused.stderr
        assert refused.stdout == ""
        assert refused.stderr == (
            f"Error: run {run} still has 2 checkpoints, {size}\n"
            "Hint: pass --with-checkpoints to delete the run with its checkpoints\n"
        )
    planned = cli.ok("runs", "rm", run, "--with-checkpoints", "--dry-run")
    assert planned.stdout == f"{run}\n"
    assert planned.stderr == f"Would delete 1 run with 2 checkpoints, {size}\n"
    assert cli.lines("runs", "ls", "-q") == [run]
    deleted = cli.ok("runs", "rm", run, "--with-checkpoints", "--yes")
    assert deleted.stdout == f"{run}\n"
    assert deleted.stderr == f"Deleted 1 run with 2 checkpoints, {size}\n"
    assert cli.lines("runs", "ls", "-q") == []
    assert cli.lines("ckpt", "ls", "-q") == []
    again = cli("runs", "rm", run, "--yes")
    assert again.exit_code == 4 and again.stdout == ""
    assert again.stderr == f"Error: training run {run} not found\n"


def test_json_several_runs_and_a_partial_failure(cli: Cli, run: str) -> None:
    empty = cli.ok("runs", "create", "-m", "logits/tiny", "--rank", "2", "-q").stdout.strip()
    cli.ok("ckpt", "save", "w1")  # in $LOGITS_RUN: refused without --with-checkpoints
    result = cli("runs", "rm", empty, run, "--yes", "--json")
    assert result.exit_code == 8, result.stderr
    assert json.loads(result.stdout) == {
        "dry_run": False,
        "deleted": [empty],
        "selected": [empty],
        "checkpoints_deleted": 0,
        "failed": [
            {
                "run": run,
                "error": f"run {run} still has 1 checkpoint, {human_size(sizes(cli, run))}",
            }
        ],
    }
    assert result.stderr.splitlines() == [
        f"Error: {run}: run {run} still has 1 checkpoint, {human_size(sizes(cli, run))}",
        "Error: 1 of 2 runs could not be deleted",
    ]
    assert cli.lines("runs", "ls", "-q") == [run]


def test_without_a_terminal_it_needs_yes(cli: Cli, run: str) -> None:
    result = cli("runs", "rm", run)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "Error: refusing to delete without --yes when not on a terminal\n"
        "Hint: add --yes to confirm\n"
    )
    assert cli.lines("runs", "ls", "-q") == [run]
    bad = cli("runs", "rm", "not a run", "--yes")
    assert bad.exit_code == 2 and bad.stdout == ""


def test_the_server_forgets_the_run_and_its_files(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch, store_backend: str
) -> None:
    """Row, checkpoints, archives (with a bucket: its objects), the live state and the run
    lock go; a checkpoint another run's state was loaded from stays while that run does."""
    server = server_factory()
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))
    store = server.store

    def ok(*args: str) -> str:
        result = invoke(args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return str(result.stdout)

    def blobs() -> set[str]:
        if store.objects is not None:
            return {name for name, _ in store.objects.listing("blobs")}
        return {p.name for p in store.blobs_dir.iterdir() if len(p.name) == 64}

    def leftovers(run_id: str) -> list[str]:
        return [p.name for p in store.runs_dir.iterdir() if quote(run_id, safe="") in p.name]

    first = ok("runs", "create", "-m", "logits/tiny", "--rank", "2", "-q").strip()
    ok("ckpt", "save", "w1", "--run", first)
    (source,) = store.list_run_checkpoints("alice", first)
    second = ok("runs", "create", "--from", source.tinker_path, "-q").strip()
    ok("ckpt", "save", "w2", "--run", second)
    (made,) = store.list_run_checkpoints("alice", second)
    assert blobs() == {source.sha256, made.sha256}
    assert store.state_dir(second).is_dir()

    ok("runs", "rm", second, "--with-checkpoints", "--yes")
    assert [
        r.training_run_id
        for r in store.list_runs("alice", access_scope="owned", limit=10, offset=0)[0]
    ] == [first]
    assert blobs() == {source.sha256}  # w1's archive: still a checkpoint of the first run
    assert not store.state_dir(second).exists()
    assert leftovers(second) == []  # the state directory and the run lock

    ok("runs", "rm", first, "--with-checkpoints", "--yes")
    assert store.list_runs("alice", access_scope="owned", limit=10, offset=0) == ([], 0)
    assert blobs() == set()
    assert leftovers(first) == []


def _service_without_run_deletion(status: int) -> Responder:
    """A service that lists a run and its checkpoints but has no DELETE for runs."""
    run = {
        "training_run_id": "r1",
        "base_model": "logits/tiny",
        "model_owner": "alice",
        "is_lora": True,
        "last_request_time": "2026-01-01T00:00:00Z",
    }

    def respond(request: Request, sock: socket.socket) -> None:
        if request.method == "DELETE":
            body = json.dumps({"detail": "Not Found" if status == 404 else "Method Not Allowed"})
        elif request.path.endswith("/checkpoints"):
            body = json.dumps({"checkpoints": [], "cursor": None})
        else:
            body = json.dumps(run)
        code = status if request.method == "DELETE" else 200
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        sock.sendall(head(code, headers) + body.encode())

    return respond


@pytest.mark.parametrize("status", [404, 405])
def test_a_deployment_without_run_deletion_is_exit_10(
    status: int, monkeypatch: pytest.MonkeyPatch, store_backend: str
) -> None:
    if store_backend != "sqlite":
        pytest.skip("no store involved")
    with hostile(_service_without_run_deletion(status)) as service:
        monkeypatch.setenv("LOGITS_BASE_URL", service.base_url)
        monkeypatch.setenv("LOGITS_API_KEY", "tml-test")
        result = invoke(["runs", "rm", "r1", "--yes"])
    assert result.exit_code == 10, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        "Error: this deployment cannot delete training runs"
        " (no DELETE /api/v1/training_runs/RUN)\n"
        "Hint: only a logits server offers it; the service keeps runs (their checkpoints can"
        " be deleted with `logits ckpt rm --run RUN`)\n"
    )


@pytest.mark.slow
def test_the_prompt_on_a_terminal(cli: Cli, run: str, store_backend: str) -> None:
    if cli.backend != "embedded" or store_backend != "sqlite":
        pytest.skip("the prompt is the CLI's, the same on every back end")
    from tests.cli.test_terminal import run_on_terminal

    cli.ok("ckpt", "save", "w1")
    size = human_size(sizes(cli, run))
    code, screen = run_on_terminal(["runs", "rm", run, "--with-checkpoints"], answer=b"n\n")
    assert code == 1, screen
    assert f"About to delete 1 run with 1 checkpoint, {size}:" in screen
    assert f"  {run}  (1 checkpoint, {size}, last request " in screen
    assert "Delete them? [y/N]" in screen
    assert screen.rstrip().endswith("Nothing deleted.") and "Error" not in screen
    assert cli.lines("runs", "ls", "-q") == [run]
    code, screen = run_on_terminal(["runs", "rm", run, "--with-checkpoints"], answer=b"y\n")
    assert code == 0, screen
    assert cli.lines("runs", "ls", "-q") == []
