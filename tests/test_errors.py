"""The error tree: exit codes per docs/ARCHITECTURE.md §4 and a total mapping from HTTP answers."""

from __future__ import annotations

import pytest

from logits_cli import errors


@pytest.mark.parametrize(
    ("status", "code", "cls", "exit_code"),
    [
        (400, "invalid_argument", errors.UsageError, 2),
        (401, "unauthenticated", errors.AuthError, 3),
        (403, "url_expired", errors.UrlExpiredError, 3),
        (403, "bad_signature", errors.BadSignatureError, 3),
        (403, None, errors.PermissionDeniedError, 3),
        (404, "not_found", errors.NotFoundError, 4),
        (410, "gone", errors.GoneError, 4),
        (409, "already_public", errors.AlreadyPublicError, 5),
        (409, "already_private", errors.AlreadyPrivateError, 5),
        (409, None, errors.ConflictError, 5),
        (405, "method_not_allowed", errors.MethodNotAllowedError, 1),
        (416, "range_not_satisfiable", errors.RangeNotSatisfiableError, 1),
        (429, "rate_limited", errors.RateLimitedError, 6),
        (500, "internal", errors.InternalServerError, 6),
        (503, "unavailable", errors.UnavailableError, 6),
        (502, None, errors.UnavailableError, 6),
        # a code that contradicts the status never wins
        (404, "already_public", errors.NotFoundError, 4),
    ],
)
def test_status_then_code(status: int, code: str | None, cls: type, exit_code: int) -> None:
    error = errors.error_for_status(status, code, "detail text")
    assert type(error) is cls
    assert error.exit_code == exit_code
    assert str(error) == "detail text"


def test_mapping_is_total() -> None:
    for status in range(300, 600):
        error = errors.error_for_status(status, None, "x")
        assert isinstance(error, errors.LogitsError)
        assert error.exit_code in {1, 2, 3, 4, 5, 6}


def test_failed_futures() -> None:
    assert type(errors.error_for_failed_future("x", "user", "already_exists")) is (
        errors.ConflictError
    )
    assert type(errors.error_for_failed_future("x", "user", "not_found")) is errors.NotFoundError
    failed = errors.error_for_failed_future("rank too large", "user", "invalid_argument")
    assert isinstance(failed, errors.JobFailedError)
    assert (failed.exit_code, failed.category, failed.failure_code) == (
        1,
        "user",
        "invalid_argument",
    )
