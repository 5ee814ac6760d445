"""Issue 8, server side: what an outside attacker sent, over a real socket (F1, F2, F3).

Rows: F1 dot segments and encoded separators in paths, ``.``/``..`` run ids; F2 bodies read
only after authentication and within a limit; F3 malformed input is a 4xx, never a 500 or a
traceback in the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from raw_http import (
    ANSWER_TIMEOUT_S,
    RawAnswer,
    ServerProcess,
    answered,
    assert_json_error,
    connect,
    read_answer,
    request_head,
    send,
    server_process,
)
from server_helpers import Api, assert_error

from logits_cli.store.store import Store

MIB = 1 << 20


def _files(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): path.stat().st_size
        for directory in (root / "blobs", root / "runs")
        for path in directory.rglob("*")
        if path.is_file()
    }


# -- F1: dot segments ---------------------------------------------------------------------


@pytest.fixture
def saved(alice: Api) -> str:
    model_id = alice.create_model()
    alice.save(model_id, "existing")
    return model_id


def test_dot_segment_paths_are_refused_before_routing(alice: Api, saved: str, live_server) -> None:
    key = alice.http.headers["x-api-key"]
    ckpt = f"/api/v1/training_runs/{saved}/checkpoints/weights/existing"
    # Each would, once decoded or normalised, name another endpoint or resource.
    targets = [
        ("GET", "/api/v1/training_runs/../checkpoints"),
        ("GET", "/api/v1/training_runs/./checkpoints"),
        ("GET", "/api/v1/training_runs/%2e%2e/checkpoints"),
        ("GET", "/api/v1/training_runs/%2E./checkpoints"),
        ("GET", "/api/v1/training_runs/.%2e/checkpoints"),
        ("GET", "/api/v1/training_runs/%2e"),
        ("GET", f"/api/v1/training_runs/{saved}%2fcheckpoints"),
        ("GET", f"/api/v1/training_runs/{saved}%2Fcheckpoints%2Fweights"),
        ("GET", f"/api/v1/training_runs/{saved}%5ccheckpoints"),
        ("GET", "/api/v1/x/../checkpoints?limit=5"),
        (
            "DELETE",
            f"/api/v1/training_runs/other/checkpoints/../../{saved}/checkpoints/weights/existing",
        ),
        ("DELETE", f"/api/v1/training_runs/{saved}/checkpoints/weights/existing/%2e%2e/existing"),
        ("POST", f"{ckpt}/publish/.."),
    ]
    before = _files(live_server.store.root)
    for method, target in targets:
        head = request_head(method, target, {"X-API-Key": key, "Content-Length": "0"})
        answer = send(live_server.port, head)
        assert_json_error(answer, 400, "invalid_argument")
        assert "segment" in answer.json()["detail"], target
    # Nothing was deleted or published by any of them.
    checkpoint = alice.checkpoint(saved, "weights/existing")
    assert checkpoint["public"] is False
    assert _files(live_server.store.root) == before


def test_ordinary_paths_with_dots_and_encoded_colons_still_route(alice: Api, saved: str) -> None:
    encoded = saved.replace(":", "%3A")
    assert alice.ok(alice.http.get(f"/api/v1/training_runs/{encoded}"))["training_run_id"] == saved
    name = "v1.0..final"  # dots inside a name are no dot segment
    alice.save(saved, name)
    assert alice.checkpoint(saved, f"weights/{name}")["checkpoint_id"] == f"weights/{name}"


def test_dot_run_ids_are_invalid_in_every_body(alice: Api, saved: str, live_server) -> None:
    before = _files(live_server.store.root)
    session = alice.session()
    for dot in (".", ".."):
        for url, body in (
            ("/api/v1/save_weights", {"model_id": dot, "path": "x"}),
            ("/api/v1/save_weights_for_sampler", {"model_id": dot, "path": "x"}),
            ("/api/v1/get_info", {"model_id": dot}),
            (
                "/api/v1/load_weights",
                {"model_id": dot, "path": f"logits://{saved}/weights/existing", "optimizer": False},
            ),
            (
                "/api/v1/load_weights",
                {"model_id": saved, "path": f"logits://{dot}/weights/existing", "optimizer": False},
            ),
            ("/api/v1/weights_info", {"tinker_path": f"logits://{dot}/weights/existing"}),
            (
                "/api/v1/create_model",
                {"session_id": dot, "model_seq_id": 0, "base_model": "logits/tiny"},
            ),
        ):
            assert_error(alice.post(url, body), 400, "invalid_argument")
    # create_model with a real session still works; its run id is never a dot segment.
    body = {"session_id": session, "model_seq_id": 1, "base_model": "logits/tiny"}
    assert alice.future_result(alice.ok(alice.post("/api/v1/create_model", body)))["model_id"]
    after = _files(live_server.store.root)
    assert {k: v for k, v in after.items() if k in before} == before


# -- F2: bodies ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``logits server start`` as its own process, so its memory and log can be watched."""
    home = tmp_path_factory.mktemp("hostile-home")
    with server_process(home) as server:
        yield server


@pytest.fixture(scope="module")
def served_key(served: ServerProcess) -> str:
    store = Store.open(served.home / "store")
    try:
        return store.create_api_key("alice")
    finally:
        store.close()


def _rss(server: ServerProcess) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


def _push_until_refused(sock, total: int) -> int:
    """Send up to ``total`` body bytes; stop when the server stops taking them."""
    sent = 0
    chunk = b"x" * MIB
    sock.settimeout(5)
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset, broken pipe, or the server stopped reading (timeout)
        pass
    return sent


def test_huge_body_without_key_is_refused_before_it_is_sent(served: ServerProcess) -> None:
    before = _rss(served)
    for path in ("/api/v1/create_session", "/api/v1/save_weights", "/api/v1/training_runs"):
        method = "GET" if path.endswith("training_runs") else "POST"
        head = request_head(
            method, path, {"Content-Type": "application/json", "Content-Length": str(512 * MIB)}
        )
        with connect(served.port) as sock:
            sock.sendall(head + b'{"tags": [')  # a partial body; the rest is never sent
            started = time.monotonic()
            answer = read_answer(sock)  # arrives while 512 MB are still "to come"
            assert time.monotonic() - started < ANSWER_TIMEOUT_S
            assert_json_error(answer, 401, "unauthenticated")
            assert answer.headers.get("connection") == "close"
            # The server does not take the body either: far less than 512 MB gets through.
            assert _push_until_refused(sock, 512 * MIB) < 256 * MIB
    assert _rss(served) - before < 50 * MIB


def test_telemetry_needs_no_key_but_has_a_limit(served: ServerProcess) -> None:
    before = _rss(served)
    ok = send(
        served.port,
        request_head("POST", "/api/v1/telemetry", {"Content-Length": "2"}) + b"{}",
    )
    assert ok.status == 200
    for _ in range(4):  # four 200 MB POSTs used to be read whole and answered 200
        head = request_head(
            "POST",
            "/api/v1/telemetry",
            {"Content-Type": "application/json", "Content-Length": str(200 * MIB)},
        )
        with connect(served.port) as sock:
            sock.sendall(head + b"[")
            assert_json_error(read_answer(sock), 413, "payload_too_large")
    assert _rss(served) - before < 50 * MIB


@pytest.mark.parametrize("authenticated", [False, True])
def test_chunked_body_over_the_limit_is_cut_off(
    served: ServerProcess, served_key: str, authenticated: bool
) -> None:
    path = "/api/v1/create_session" if authenticated else "/api/v1/telemetry"
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    if authenticated:
        headers["X-API-Key"] = served_key
    before = _rss(served)
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    with connect(served.port) as sock:
        sock.sendall(request_head("POST", path, headers) + b"1\r\n[\r\n")
        sent = 0
        while sent < 64 * MIB and not answered(sock):
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed the connection after answering
                break
            sent += 64 * 1024
        answer = read_answer(sock)
    assert_json_error(answer, 413, "payload_too_large")
    assert sent < 8 * MIB  # cut off near the 1 MiB limit, not after the whole stream
    assert _rss(served) - before < 50 * MIB


def test_declared_length_over_the_limit_with_a_key_is_413_unread(
    served: ServerProcess, served_key: str
) -> None:
    head = request_head(
        "POST",
        "/api/v1/create_session",
        {"X-API-Key": served_key, "Content-Length": str(2 * MIB)},
    )
    with connect(served.port) as sock:
        sock.sendall(head + b"{")
        answer = read_answer(sock)
    assert_json_error(answer, 413, "payload_too_large")
    assert "1048576 bytes" in answer.json()["detail"]


def test_bodies_within_the_limit_still_work(served: ServerProcess, served_key: str) -> None:
    body = json.dumps({"tags": ["t" * 1000] * 900, "sdk_version": "x"}).encode()  # ~900 KB
    head = request_head(
        "POST",
        "/api/v1/create_session",
        {"X-API-Key": served_key, "Content-Length": str(len(body))},
    )
    answer = send(served.port, head + body)
    assert answer.status == 200 and "session_id" in answer.json()


# -- F3: malformed input -------------------------------------------------------------------


def _post(served: ServerProcess, key: str | None, path: str, body: bytes) -> RawAnswer:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if key:
        headers["X-API-Key"] = key
    return send(served.port, request_head("POST", path, headers) + body)


def _api(served: ServerProcess, key: str) -> Api:
    class _Server:
        base_url = served.base_url

    return Api(_Server(), key)


def test_malformed_input_is_400_without_traceback(served: ServerProcess, served_key: str) -> None:
    api = _api(served, served_key)
    model_id = api.create_model()
    session = api.session()
    deep = b'{"tags": ' + b"[" * 100_000 + b"]" * 100_000 + b', "sdk_version": "x"}'
    cases = [
        ("/api/v1/create_session", deep),
        ("/api/v1/create_session", b'{"tags": ' + b"[" * 40 + b"]" * 40 + b', "sdk_version": "x"}'),
        ("/api/v1/create_session", b'{"tags": ["\\ud800"], "sdk_version": "x"}'),
        (
            "/api/v1/create_session",
            b'{"tags": [], "sdk_version": "x", "user_metadata": {"\\udfff": 1}}',
        ),
        ("/api/v1/create_session", b'{"tags": [], "sdk_version": "x", "n": ' + b"9" * 5000 + b"}"),
        ("/api/v1/create_session", b'{"tags": [], "sdk_version": "x", "n": NaN}'),
        ("/api/v1/create_session", b'{"tags": [], "sdk_version": "x", "n": 1e999}'),
        (
            "/api/v1/save_weights",
            json.dumps({"model_id": model_id, "path": "a", "seq_id": 2**70}).encode(),
        ),
        (
            "/api/v1/load_weights",
            json.dumps(
                {
                    "model_id": model_id,
                    "path": f"logits://{model_id}/weights/a",
                    "optimizer": False,
                    "seq_id": -(2**70),
                }
            ).encode(),
        ),
    ]
    for seed in (-1, 2**70):
        body = {
            "session_id": session,
            "model_seq_id": 5,
            "base_model": "logits/tiny",
            "lora_config": {"rank": 4, "seed": seed},
        }
        cases.append(("/api/v1/create_model", json.dumps(body).encode()))
    cases.append(
        (
            "/api/v1/create_model",
            json.dumps(
                {"session_id": session, "model_seq_id": 2**64, "base_model": "logits/tiny"}
            ).encode(),
        )
    )
    for path, body in cases:
        assert_json_error(_post(served, served_key, path, body), 400, "invalid_argument")
    # No future was created for any of them: the run list did not change.
    runs = api.ok(api.http.get("/api/v1/training_runs"))["training_runs"]
    assert [run["training_run_id"] for run in runs] == [model_id]
    api.http.close()
    assert "Traceback" not in served.log()
    assert " ERROR " not in served.log()


def test_blob_range_with_a_5000_digit_number(served: ServerProcess, served_key: str) -> None:
    api = _api(served, served_key)
    model_id = api.create_model()
    api.save(model_id, "r")
    url = api.archive_url(model_id, "weights/r")
    api.http.close()
    target = url.removeprefix(served.base_url)
    huge = "9" * 5000
    unsatisfiable = send(served.port, request_head("GET", target, {"Range": f"bytes={huge}-"}))
    assert_json_error(unsatisfiable, 416, "range_not_satisfiable")
    assert unsatisfiable.headers["content-range"].startswith("bytes */")
    size = int(unsatisfiable.headers["content-range"].removeprefix("bytes */"))
    # A huge last position means "to the end"; a huge suffix means "the whole file".
    for spec, first in (
        (f"bytes=0-{huge}", 0),
        (f"bytes=-{huge}", 0),
        (f"bytes={'0' * 5000}1-{huge}", 1),  # leading zeros: the position is 1
    ):
        answer = send(served.port, request_head("GET", target, {"Range": spec}))
        assert answer.status == 206, (spec, answer.body[:200])
        assert answer.headers["content-range"] == f"bytes {first}-{size - 1}/{size}"
    assert "Traceback" not in served.log()


def test_a_401_without_a_body_keeps_the_connection(served: ServerProcess) -> None:
    with connect(served.port) as sock:
        for _ in range(2):  # the same connection answers twice
            sock.sendall(request_head("GET", "/api/v1/training_runs"))
            answer = read_answer(sock)
            assert_json_error(answer, 401, "unauthenticated")
            assert answer.headers.get("connection") != "close"
