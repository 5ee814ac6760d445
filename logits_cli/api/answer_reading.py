"""Reading the server's answers: a non-2xx answer becomes its ``errors.py`` class, a 2xx
JSON body a validated model (``RequestLayer`` inherits this). Messages are one line, never
longer than ``MAX_DETAIL_CHARS``, and never hold our own credentials should a server echo
them back (``redact``)."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from logits_cli import errors
from logits_cli.api.retry import is_retryable_status
from logits_cli.api.transport_errors import explain_full_disk

MAX_DETAIL_CHARS = 300

M = TypeVar("M", bound=BaseModel)


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AnswerReader:
    """Error mapping and validation for the answers of one server (``host``)."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._secrets: set[str] = set()  # the API key and JWTs, once known

    def redact(self, text: str) -> str:
        """Hide our own credentials should a server echo them back."""
        for secret in self._secrets:
            text = text.replace(secret, "****")
        return text

    def error_for(
        self,
        response: httpx.Response,
        *,
        attempts: int | None = None,
        context: str | None = None,
    ) -> errors.LogitsError:
        """The ``errors.py`` class for a non-2xx answer; bodies may be anything."""
        status = response.status_code
        code: str | None = None
        detail: str | None = None
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            if isinstance(body.get("code"), str):
                code = body["code"]
            if isinstance(body.get("detail"), str) and body["detail"].strip():
                detail = one_line(self.redact(body["detail"]))
        if detail is None:
            phrase = response.reason_phrase or "error"
            detail = f"{self._host} answered HTTP {status} {phrase}".rstrip()
        elif is_retryable_status(status) or not 400 <= status <= 499:
            detail = f"{detail} (HTTP {status})"
        if context:
            detail = f"{context}: {detail}"
        if attempts is not None and attempts > 1:
            detail = f"{detail}; gave up after {attempts} attempts"
        error = errors.error_for_status(status, code, detail)
        if status == 401 and error.hint is None:
            error.hint = "check LOGITS_API_KEY or LOGITS_API_KEY_CMD"
        return explain_full_disk(error)

    def parse(self, response: httpx.Response, model: type[M]) -> M:
        """Validate a 2xx JSON body; anything unreadable is ``UnexpectedResponseError``."""
        return self.validate(response, model, self.json_body(response))

    def json_body(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            raise errors.UnexpectedResponseError(
                f"the answer to {_where(response)} is not JSON (HTTP {response.status_code})",
                status=response.status_code,
            ) from None

    def validate(self, response: httpx.Response, model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            # Name the first bad field without quoting the offending value.
            first = exc.errors()[0]
            location = ".".join(str(part) for part in first["loc"]) or "body"
            raise errors.UnexpectedResponseError(
                f"the answer to {_where(response)} is not a valid {model.__name__}: "
                f"{location}: {first['msg'].lower()}",
                status=response.status_code,
            ) from None


def _where(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path}"
