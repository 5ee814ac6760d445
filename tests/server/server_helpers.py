"""Helpers for the server tests: a thin httpx wrapper speaking the wire protocol."""

from __future__ import annotations

from typing import Any

import httpx


class Api:
    """One user's plain-httpx view of a live server."""

    def __init__(self, server: Any, key: str | None) -> None:
        headers = {"X-API-Key": key} if key else {}
        self.server = server
        self.http = httpx.Client(base_url=server.base_url, headers=headers, timeout=60)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return (
            self.http.post(path, json=body, **kwargs)
            if body is not None
            else self.http.post(path, **kwargs)
        )

    def ok(self, response: httpx.Response) -> Any:
        assert response.status_code == 200, response.text
        return response.json()

    def future_result(self, handle: dict[str, Any]) -> dict[str, Any]:
        """Poll until the future is no longer pending."""
        while True:
            answer = self.ok(
                self.post("/api/v1/retrieve_future", {"request_id": handle["request_id"]})
            )
            if answer.get("type") != "try_again":
                return answer

    def session(self) -> str:
        body = {"tags": [], "sdk_version": "test", "user_metadata": {}, "type": "create_session"}
        return self.ok(self.post("/api/v1/create_session", body))["session_id"]

    def create_model(
        self,
        base_model: str = "logits/tiny",
        rank: int = 4,
        seq: int = 0,
        session: str | None = None,
    ) -> str:
        body = {
            "session_id": session or self.session(),
            "model_seq_id": seq,
            "base_model": base_model,
            "lora_config": {"rank": rank, "seed": 7},
        }
        result = self.future_result(self.ok(self.post("/api/v1/create_model", body)))
        assert result == {"model_id": f"{body['session_id']}:train:{seq}", "type": "create_model"}
        return result["model_id"]

    def save(
        self, model_id: str, name: str, *, sampler: bool = False, **fields: Any
    ) -> dict[str, Any]:
        endpoint = "save_weights_for_sampler" if sampler else "save_weights"
        handle = self.ok(
            self.post(f"/api/v1/{endpoint}", {"model_id": model_id, "path": name, **fields})
        )
        return self.future_result(handle)

    def checkpoint(self, model_id: str, checkpoint_id: str) -> dict[str, Any]:
        listed = self.ok(self.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
        [found] = [c for c in listed["checkpoints"] if c["checkpoint_id"] == checkpoint_id]
        return found

    def archive_url(self, model_id: str, checkpoint_id: str) -> str:
        path = f"/api/v1/training_runs/{model_id}/checkpoints/{checkpoint_id}/archive"
        return self.ok(self.http.get(path, params={"format": "json"}))["url"]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content) > 0
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
