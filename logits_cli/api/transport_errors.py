"""The one map of transport failures to classes of ``errors.py`` (docs/ARCHITECTURE.md §4),
and full-disk answers.

Two steps. The standard library's failures under the direct blob reader (``blob_direct.py``:
socket timeouts and resets, ``ssl`` errors, ``http.client``'s ``IncompleteRead``,
``RemoteDisconnected``, ``LineTooLong``, …) become the httpx exception httpx's own transport
raises for them (``httpx_error_for``), as httpx itself maps httpcore's and h11's. Then every
httpx failure, from the request layer (``http.py``) or the transfer engine, on the API or on a
blob URL, ends as a known class with a one-line message that never quotes a URL (and so never
a signed token):

* connection errors, timeouts, a server breaking HTTP, proxy failures: ``UnavailableError``
  (exit 6), retried first where ``is_transient_httpx_error`` says a repeat may cure them;
* an undecodable body and a redirect loop: ``UnavailableError`` at once, naming the host;
* a URL or request httpx cannot send: ``ConfigError`` (exit 2) when it came from the
  configuration, ``UnexpectedResponseError`` (exit 1) when the server handed it out.
"""

from __future__ import annotations

import http.client
import socket
import ssl

import httpx

from logits_cli import errors

# Every exception an httpx request raises for a failure. (``httpx.StreamError`` and its
# subclasses are misuse of a response object: bugs, left to surface as such.)
HTTPX_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL)

# Exceptions a repeat may cure; the others (bad URL scheme, undecodable body, redirect loop)
# fail the same way every time.
_TRANSIENT_HTTPX_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)

# Failures to even form a request: the URL or a header cannot be sent.
_UNSENDABLE_HTTPX_ERRORS = (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError)


# What http.client raises for an answer that breaks HTTP/1.1 (BadStatusLine, IncompleteRead,
# LineTooLong, …); ValueError for a malformed chunk size or Content-Length.
HTTP_PROTOCOL_ERRORS = (http.client.HTTPException, ValueError)
# How sending a request on a kept-alive connection the server has since closed fails
# (``RemoteDisconnected`` is a ``ConnectionResetError`` too).
CLOSED_CONNECTION_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def httpx_error_for(
    exc: BaseException, *, connecting: bool, sending: bool = False
) -> BaseException:
    """The httpx exception httpx's own transport raises for a standard-library failure
    ``exc`` of a request (``connecting``: before the connection was made; ``sending``: up to
    the answer's head). A ``TimeoutError`` while reading stays one: the engine reads it as a
    stall. Anything else (``KeyboardInterrupt``, a bug) is returned unchanged."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    if sending and isinstance(exc, CLOSED_CONNECTION_ERRORS):
        return httpx.RemoteProtocolError(f"the server closed the connection ({exc})")
    if isinstance(exc, TimeoutError):  # socket.timeout
        return httpx.ConnectTimeout("timed out connecting") if connecting else exc
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return httpx.ConnectError(f"TLS failure ({type(exc).__name__})")
    if isinstance(exc, OSError):
        kind = httpx.ConnectError if connecting else httpx.ReadError
        return kind(exc.strerror or type(exc).__name__)
    if isinstance(exc, HTTP_PROTOCOL_ERRORS):
        return httpx.RemoteProtocolError(f"the server broke HTTP/1.1 ({type(exc).__name__})")
    return exc


def is_transient_httpx_error(exc: Exception) -> bool:
    """Whether a repeat of the request may cure ``exc`` (connection errors, timeouts, a
    server breaking the HTTP protocol, proxy failures)."""
    return isinstance(exc, _TRANSIENT_HTTPX_ERRORS)


def is_unreachable(exc: Exception) -> bool:
    """A refused connection or a name that does not resolve (``socket.gaierror``)."""
    if not isinstance(exc, httpx.ConnectError) or isinstance(exc, httpx.ProxyError):
        return False
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (ConnectionRefusedError, socket.gaierror)):
            return True
        cause = cause.__cause__ or cause.__context__
    # httpcore re-raises the OSError's text only for some failures: read it as a fallback.
    text = str(exc).lower()
    return (
        "connection refused" in text
        or "name or service not known" in text
        or ("temporary failure in name resolution" in text)
    )


def describe_httpx_error(exc: Exception) -> str:
    """A short reason for an httpx exception, built without ``str(exc)``, which may quote
    the URL (and so a signed token)."""
    reasons: list[tuple[type[Exception], str]] = [
        (httpx.ConnectTimeout, "connection timed out"),
        (httpx.ReadTimeout, "timed out waiting for the answer"),
        (httpx.WriteTimeout, "timed out sending the request"),
        (httpx.PoolTimeout, "timed out waiting for a free connection"),
        (httpx.TimeoutException, "timed out"),
        (httpx.ConnectError, "cannot connect"),
        (httpx.ReadError, "connection dropped while reading the answer"),
        (httpx.WriteError, "connection dropped while sending the request"),
        (httpx.CloseError, "connection failed while closing"),
        (httpx.RemoteProtocolError, "the server broke the HTTP protocol"),
        (httpx.LocalProtocolError, "invalid HTTP request"),
        (httpx.ProxyError, "proxy error"),
        (httpx.UnsupportedProtocol, "unsupported URL scheme"),
        (httpx.DecodingError, "cannot decode the answer"),
        (httpx.TooManyRedirects, "too many redirects"),
        (httpx.InvalidURL, "invalid URL"),
    ]
    reason = next((text for cls, text in reasons if isinstance(exc, cls)), type(exc).__name__)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return f"{reason} ({cause.strerror.lower()})"
        cause = cause.__cause__ or cause.__context__
    return reason


def error_for_httpx(
    exc: Exception, *, host: str, where: str = "", url_from_server: bool = False
) -> errors.LogitsError:
    """The ``errors.py`` class for an httpx exception (one of ``HTTPX_ERRORS``), with a
    one-line message that never quotes a URL.

    ``host`` names the peer, ``where`` (e.g. ``"GET /api/v1/healthz"``) the request.
    ``url_from_server`` says who supplied the URL: a URL httpx cannot send is then the
    server's fault (``UnexpectedResponseError``, exit 1), else the configuration's
    (``ConfigError``, exit 2). Callers decide about retries with ``is_transient_httpx_error``
    first; this function gives the final error either way.

    The transfer engine maps blob-download failures with ``url_from_server=True``.
    """
    suffix = f" ({where})" if where else ""
    reason = describe_httpx_error(exc)
    if isinstance(exc, httpx.TooManyRedirects):
        source = _request_host(exc) or host
        return errors.UnavailableError(
            f"too many redirects from {source}{suffix}",
            hint=f"{source} redirects in a loop; report it to the service's operator",
        )
    if isinstance(exc, _UNSENDABLE_HTTPX_ERRORS):
        message = f"cannot send the request to {host}: {reason}{suffix}"
        if url_from_server:
            return errors.UnexpectedResponseError(message)
        return errors.ConfigError(
            message, hint="check the base URL and API key with `logits config show`"
        )
    return errors.UnavailableError(f"{reason} talking to {host}{suffix}")


def _request_host(exc: Exception) -> str | None:
    try:
        request = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when none was set
        return None
    return request.url.host or None


FULL_DISK_SUMMARY = "the server has no space left to store this"
FULL_DISK_HINT = (
    "the server's disk is full: ask its operator to free space there, or delete checkpoints "
    "you no longer need (`logits ckpt rm`)"
)


def explain_full_disk(error: errors.LogitsError) -> errors.LogitsError:
    """An ``InsufficientStorageError`` (507, or a future failed with that code) says plainly
    that the server's disk is full, and hints so, instead of "check the service address"."""
    if isinstance(error, errors.InsufficientStorageError):
        if FULL_DISK_SUMMARY not in error.message:
            error.message = f"{FULL_DISK_SUMMARY}: {error.message}"
            error.args = (error.message,)
        if error.hint is None:
            error.hint = FULL_DISK_HINT
    return error
