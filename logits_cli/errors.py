"""The one exception tree of logits.

Every class carries the CLI exit code (docs/ARCHITECTURE.md §4) and, where the error crosses the wire,
the HTTP status and error ``code`` of docs/protocol.md §4.4. The server raises these classes and
renders them as ``{"detail", "code"}``; the API core turns every HTTP answer back into them
(``error_for_status``); the CLI maps them to ``Error: …`` and the exit code. This module
imports nothing from the project and nothing heavy, so every layer may use it.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_UNAVAILABLE = 6
EXIT_INTEGRITY = 7
EXIT_PARTIAL = 8
EXIT_BUSY = 9
EXIT_UNSUPPORTED = 10
EXIT_URL_REFUSED = 11
EXIT_INTERRUPTED = 130


class LogitsError(Exception):
    """Base class. ``message`` is one line for humans and never holds a secret."""

    exit_code: ClassVar[int] = EXIT_ERROR
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, hint: str | None = None, option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # The library option (a field of DownloadOptions, SyncOptions, …) whose setting
        # caused this error or would avoid it, or the operation the deployment refused
        # (delete_run): the library never names command-line flags, the CLI's error
        # decorator turns this into its flag hint (cli/failures.py).
        self.option = option

    def __str__(self) -> str:
        return self.message


# -- exit 2: usage ------------------------------------------------------------------------


class UsageError(LogitsError):
    """Bad option, URI, name, duration; a malformed request (HTTP 400)."""

    exit_code = EXIT_USAGE
    http_status = 400
    code = "invalid_argument"


class ConfigError(UsageError):
    """The configuration is unusable (bad profile, bad config file, bad base URL)."""


class ConfirmationRequired(UsageError):
    """A destructive command ran without a terminal and without ``--yes``."""


# -- exit 3: authentication and permission ----------------------------------------------


class AuthError(LogitsError):
    """Missing, unknown or revoked credential (HTTP 401)."""

    exit_code = EXIT_AUTH
    http_status = 401
    code = "unauthenticated"


class PermissionDeniedError(AuthError):
    http_status = 403
    code = "permission_denied"


class UrlExpiredError(PermissionDeniedError):
    """A signed blob URL is past its expiry; the transfer engine fetches a fresh one."""

    code = "url_expired"


class BadSignatureError(PermissionDeniedError):
    code = "bad_signature"


# -- exit 4: not found --------------------------------------------------------------------


class NotFoundError(LogitsError):
    exit_code = EXIT_NOT_FOUND
    http_status = 404
    code = "not_found"


class GoneError(NotFoundError):
    """A future whose result is no longer kept (HTTP 410)."""

    http_status = 410
    code = "gone"


# -- exit 5: conflict ---------------------------------------------------------------------


class ConflictError(LogitsError):
    exit_code = EXIT_CONFLICT
    http_status = 409
    code = "already_exists"


class AlreadyPublicError(ConflictError):
    code = "already_public"


class AlreadyPrivateError(ConflictError):
    code = "already_private"


class NotEmptyError(ConflictError):
    """A training run that still has checkpoints, deleted without them (our extension,
    docs/protocol.md §5.5)."""

    code = "not_empty"


# -- exit 1: other protocol answers ------------------------------------------------------


class MethodNotAllowedError(LogitsError):
    http_status = 405
    code = "method_not_allowed"


class RangeNotSatisfiableError(LogitsError):
    http_status = 416
    code = "range_not_satisfiable"


class PayloadTooLargeError(UsageError):
    """A request body above the endpoint's documented limit (HTTP 413)."""

    http_status = 413
    code = "payload_too_large"


class JobFailedError(LogitsError):
    """A future finished with a failure the other classes do not describe."""

    def __init__(
        self,
        message: str,
        *,
        category: str = "unknown",
        failure_code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.category = category
        self.failure_code = failure_code


class UnexpectedResponseError(LogitsError):
    """An answer the protocol does not allow (unknown status, unparseable body)."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


# -- exit 6: unavailable ------------------------------------------------------------------


class UnavailableError(LogitsError):
    """Network error, timeout, 5xx or 429 after retries."""

    exit_code = EXIT_UNAVAILABLE
    http_status = 503
    code = "unavailable"


class DatabaseUnavailableError(UnavailableError):
    """The server's own database did not answer (restarting, a network cut): 503 like any
    unavailability, and a job that met it may run again once the database is back."""


class RateLimitedError(UnavailableError):
    http_status = 429
    code = "rate_limited"


class InternalServerError(UnavailableError):
    http_status = 500
    code = "internal"


class InsufficientStorageError(UnavailableError):
    """The server's store has no space left (HTTP 507); retrying soon will not help."""

    http_status = 507
    code = "insufficient_storage"


# -- exit 7..9 ----------------------------------------------------------------------------


class IntegrityError(LogitsError):
    """Size or digest mismatch; unsafe, incomplete or corrupt archive or download."""

    exit_code = EXIT_INTEGRITY


class PartialFailureError(LogitsError):
    """A bulk command where some items failed."""

    exit_code = EXIT_PARTIAL


class BusyError(LogitsError):
    """A lock (the sync lock, a part-file lock) is held by another process."""

    exit_code = EXIT_BUSY


class UnsupportedError(LogitsError):
    """What this deployment does not offer: archive downloads on the files generation,
    sampler downloads there, an export that needs opt-in (docs/protocol.md §11.6). Distinct
    from not-found: the checkpoint exists, the endpoint does not."""

    exit_code = EXIT_UNSUPPORTED


class DownloadUrlRefusedError(LogitsError):
    """A blob store refused the signed download URL the service handed out, and a fresh one
    too, or fresh URLs kept expiring early (docs/protocol.md §6.3 step 5). Not about the API
    key (blob URLs carry none): the service signs URLs its store rejects (expired signing
    credentials, a wrong clock). Never sent by our server, so not mapped from the wire."""

    exit_code = EXIT_URL_REFUSED
    http_status = 403
    code = "download_url_refused"


# -- mapping from the wire ----------------------------------------------------------------

_BY_CODE: dict[str, type[LogitsError]] = {
    cls.code: cls
    for cls in (
        UsageError,
        AuthError,
        PermissionDeniedError,
        UrlExpiredError,
        BadSignatureError,
        NotFoundError,
        GoneError,
        ConflictError,
        AlreadyPublicError,
        AlreadyPrivateError,
        NotEmptyError,
        MethodNotAllowedError,
        RangeNotSatisfiableError,
        PayloadTooLargeError,
        RateLimitedError,
        InternalServerError,
        InsufficientStorageError,
        UnavailableError,
    )
}

_BY_STATUS: dict[int, type[LogitsError]] = {
    400: UsageError,
    401: AuthError,
    402: PermissionDeniedError,  # billing problem on newer deployments (docs/protocol.md §10.2)
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: UnavailableError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    416: RangeNotSatisfiableError,
    429: RateLimitedError,
    507: InsufficientStorageError,
}


def error_for_status(status: int, code: str | None, detail: str) -> LogitsError:
    """The error for a non-2xx HTTP answer: the status decides, the code refines.

    Total over every status, so no answer can escape the tree (docs/protocol.md §4.4: "look at
    the status first and the code second").
    """
    by_status = _BY_STATUS.get(status)
    if by_status is None:
        if 500 <= status <= 599:
            by_status = InternalServerError if status == 500 else UnavailableError
        else:
            return UnexpectedResponseError(f"{detail} (HTTP {status})", status=status)
    refined = _BY_CODE.get(code or "")
    if refined is not None and refined.http_status == by_status.http_status:
        return refined(detail)
    return by_status(detail)


_FUTURE_FAILURES: dict[str, type[LogitsError]] = {
    "already_exists": ConflictError,
    "not_found": NotFoundError,
    "insufficient_storage": InsufficientStorageError,
    # A job that waited BUSY_TIMEOUT_SECONDS for a lock (a save behind a long save of the
    # same run) did nothing: busy, exit 6, as a 503 that outlasted its retries.
    "unavailable": UnavailableError,
}


def error_for_failed_future(message: str, category: str, code: str | None) -> LogitsError:
    """The error for a future that finished with ``{"error", "category", "code"}``."""
    cls = _FUTURE_FAILURES.get(code or "")
    if cls is not None:
        return cls(message)
    return JobFailedError(message, category=category, failure_code=code)
