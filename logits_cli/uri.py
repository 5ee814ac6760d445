"""Checkpoint references: ``logits://RUN/KIND/NAME`` and ``tinker://…`` (docs/protocol.md §3).

One parser serves the client and the server, so both halves agree on what a valid path is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from logits_cli.errors import UsageError

SCHEMES: Final = ("logits", "tinker")
# ``external_weights`` checkpoints are adapter-only exports of the files generation
# (docs/protocol.md §11.3): listed, deleted, published and downloaded file by file.
EXTERNAL_KIND: Final = "external_weights"
KINDS: Final = ("weights", "sampler_weights", EXTERNAL_KIND)
# The kinds a ``…/archive`` request (docs/protocol.md §5.6.4) can serve.
ARCHIVE_KINDS: Final = ("weights", "sampler_weights")
KIND_TO_TYPE: Final = {
    "weights": "training",
    "sampler_weights": "sampler",
    EXTERNAL_KIND: "external",
}
TYPE_TO_KIND: Final = {v: k for k, v in KIND_TO_TYPE.items()}
LATEST: Final = "@latest"

NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# '%' is refused so no segment can smuggle an encoded '/' or '.'; '\\' because some proxies
# read it as '/'. Dot-only segments are refused separately (``_is_dot_segment``).
_RUN_ID_FORBIDDEN: Final = re.compile(r"[/\\?#%\s\x00-\x1f\x7f]")
_PATH_FORBIDDEN: Final = re.compile(r"[\\?#%\s\x00-\x1f\x7f]")
# Segments of kinds this client does not know (listed by newer deployments): lower-case words.
_KIND_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _is_dot_segment(segment: str) -> bool:
    """``.``, ``..`` (and, to be safe, any all-dots segment): RFC 3986 dot segments, which
    httpx and servers fold away, re-targeting the request (``/training_runs/../checkpoints``
    is the user-wide listing)."""
    return bool(segment) and segment.strip(".") == ""


def validate_name(name: str) -> str:
    """Return ``name`` if it follows the checkpoint-name grammar, else raise UsageError."""
    if NAME_RE.fullmatch(name):
        return name
    if not name:
        raise UsageError("checkpoint name is empty")
    if len(name) > 128:
        raise UsageError(f"checkpoint name is {len(name)} characters long; the limit is 128")
    if not re.match(r"[A-Za-z0-9_]", name[0]):
        raise UsageError(f"checkpoint name {name!r} must start with a letter, a digit or '_'")
    bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
    shown = " ".join(repr(c) for c in bad)
    raise UsageError(f"checkpoint name {name!r} has characters outside [A-Za-z0-9._-]: {shown}")


def validate_run_id(run_id: str) -> str:
    """Run ids are opaque; only what would break a URL path is refused (docs/protocol.md §3.3)."""
    if not run_id:
        raise UsageError("run id is empty")
    if _is_dot_segment(run_id):
        raise UsageError(f"run id {run_id!r} is not a run id: dot segments are not allowed")
    match = _RUN_ID_FORBIDDEN.search(run_id)
    if match:
        raise UsageError(f"run id {run_id!r} contains a forbidden character {match.group()!r}")
    return run_id


def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(
            f"unknown checkpoint kind {kind!r}; expected 'weights', 'sampler_weights' "
            "or 'external_weights'"
        )
    return kind


def validate_segment(segment: str, what: str) -> str:
    """Any other path segment that becomes part of a request path: not empty, not a dot
    segment, no character that could end or re-shape the path."""
    if not segment:
        raise UsageError(f"{what} is empty")
    if _is_dot_segment(segment):
        raise UsageError(f"{what} {segment!r} is a dot segment, which is not allowed")
    match = _RUN_ID_FORBIDDEN.search(segment)
    if match:
        raise UsageError(f"{what} {segment!r} contains a forbidden character {match.group()!r}")
    return segment


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """A parsed checkpoint path. ``name`` may be ``@latest`` when selectors are allowed."""

    run_id: str
    kind: str
    name: str
    scheme: str = "logits"

    @property
    def checkpoint_id(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def is_latest(self) -> bool:
        return self.name == LATEST

    @property
    def checkpoint_type(self) -> str:
        return KIND_TO_TYPE.get(self.kind, self.kind)

    def with_scheme(self, scheme: str) -> CheckpointRef:
        return CheckpointRef(self.run_id, self.kind, self.name, scheme)

    def with_name(self, name: str) -> CheckpointRef:
        return CheckpointRef(self.run_id, self.kind, name, self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.run_id}/{self.kind}/{self.name}"

    @classmethod
    def parse(
        cls, text: str, *, allow_latest: bool = False, any_kind: bool = False
    ) -> CheckpointRef:
        """Parse a checkpoint URI in either scheme, rewriting the legacy two-segment form.

        ``allow_latest`` accepts the ``@latest`` selector as the name (CLI inputs only).
        ``any_kind`` accepts unknown kind segments (paths listed by newer deployments,
        docs/protocol.md §10.2); names are then not checked either.
        """
        if not isinstance(text, str):
            raise UsageError("checkpoint path must be a string")
        scheme, sep, rest = text.partition("://")
        if not sep:
            raise UsageError(
                f"checkpoint path {text!r} is not a URI; expected logits://RUN/KIND/NAME"
            )
        if scheme not in SCHEMES:
            raise UsageError(
                f"checkpoint path {text!r} has scheme {scheme!r}; expected 'logits' or 'tinker'"
            )
        match = _PATH_FORBIDDEN.search(rest)
        if match:
            raise UsageError(
                f"checkpoint path {text!r} contains a forbidden character {match.group()!r}"
            )
        segments = rest.split("/")
        if any(not s for s in segments):
            raise UsageError(f"checkpoint path {text!r} has an empty segment")
        if len(segments) == 2:
            run_id, name = segments
            kind = "weights"
        elif len(segments) == 3:
            run_id, kind, name = segments
        else:
            raise UsageError(
                f"checkpoint path {text!r} has {len(segments)} segments after '://'; "
                "expected RUN/KIND/NAME"
            )
        validate_run_id(run_id)
        if any_kind and kind not in KINDS:
            # Unknown kinds still become request path segments: keep them inert.
            if not _KIND_RE.fullmatch(kind):
                raise UsageError(f"checkpoint path {text!r} has an invalid kind {kind!r}")
            validate_segment(name, "checkpoint name")
            return cls(run_id, kind, name, scheme)
        validate_kind(kind)
        if not (allow_latest and name == LATEST):
            validate_name(name)
        return cls(run_id, kind, name, scheme)


def format_path(run_id: str, kind: str, name: str, scheme: str = "logits") -> str:
    return str(CheckpointRef(run_id, kind, name, scheme))
