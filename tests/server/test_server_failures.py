"""Server-side failures: 500/503 answers and failed futures that leak nothing."""

from __future__ import annotations

from server_helpers import Api, assert_error


def test_broken_live_state_fails_the_future_as_server_internal(server_factory) -> None:
    server = server_factory()
    api = Api(server, server.api_key("alice"))
    model_id = api.create_model()
    state = server.store.state_dir(model_id)
    # Its key kept, the directory claims to hold the state its row records (a directory
    # without the key, or with another, is rebuilt from the row instead).
    for path in state.iterdir():
        if path.is_file() and path.name != ".state-key":
            path.unlink()
    failed = api.save(model_id, "broken")
    assert failed["category"] == "server" and failed["code"] == "internal"
    assert set(failed) == {"error", "category", "code"}
    api.http.close()


def test_a_lost_live_state_is_rebuilt_from_the_runs_row(server_factory) -> None:
    """The row records the seed: the same adapter is drawn again, byte for byte."""
    import shutil

    server = server_factory()
    api = Api(server, server.api_key("alice"))
    model_id = api.create_model()
    state = server.store.state_dir(model_id)
    before = (state / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(state)
    saved = api.save(model_id, "rebuilt")
    assert saved["path"].endswith("/weights/rebuilt"), saved
    assert (state / "adapter_model.safetensors").read_bytes() == before
    api.http.close()


def test_closed_store_answers_500_and_healthz_503_without_details(server_factory) -> None:
    server = server_factory()
    api = Api(server, server.api_key("alice"))
    server.store.close()
    response = api.http.get("/api/v1/training_runs")
    assert_error(response, 500, "internal")
    assert response.json()["detail"] == "internal server error"
    health = api.http.get("/api/v1/healthz")
    assert_error(health, 503, "unavailable")
    assert health.headers["retry-after"] == "1"
    api.http.close()
