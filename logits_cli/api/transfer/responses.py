"""Reading a blob answer's headers: the validators that guard a resumed download, and what
an error answer says (our JSON body or an object store's XML one), made safe to show."""

from __future__ import annotations

import re

import httpx

from logits_cli.api.transfer.tuning import VALIDATOR_HEADERS


def response_validators(headers: httpx.Headers) -> dict[str, str]:
    found = {}
    for name in VALIDATOR_HEADERS:
        values = headers.get_list(name)
        if values:
            found[name] = ", ".join(values)
    if found.get("etag", "").startswith("W/"):
        del found["etag"]  # a weak tag cannot guard byte ranges
    return found


# An object store's error body (S3, GCS's XML API, MinIO, R2): <Error><Code>…<Message>….
_XML_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{1,300})</Message>")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
MAX_DETAIL_SHOWN = 160


def error_detail(response: httpx.Response) -> tuple[str | None, str | None]:
    """(detail, code) of an error answer: our JSON body, or an object store's XML one."""
    try:
        body = response.json()
    except ValueError:
        return xml_error_detail(response.content[:65536])
    if not isinstance(body, dict):
        return None, None
    detail, code = body.get("detail"), body.get("code")
    return (detail if isinstance(detail, str) else None, code if isinstance(code, str) else None)


def xml_error_detail(body: bytes) -> tuple[str | None, str | None]:
    code, message = _XML_CODE.search(body), _XML_MESSAGE.search(body)
    return (
        message.group(1).decode("latin-1") if message else None,
        code.group(1).decode("latin-1") if code else None,
    )


def refusal_text(status: int, detail: str | None, code: str | None) -> str:
    """``HTTP 403 AccessDenied: Request has expired``: what a blob server said, shown to the
    user, so only printable ASCII and a bounded length of it (the server chose the text)."""
    said = ": ".join(part for part in (code, detail) if part)
    said = _UNPRINTABLE.sub(" ", said).strip()
    if len(said) > MAX_DETAIL_SHOWN:
        said = said[: MAX_DETAIL_SHOWN - 1] + "…"
    return f"HTTP {status} {said}" if said else f"HTTP {status}"
