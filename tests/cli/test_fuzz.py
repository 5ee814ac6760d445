"""Bad names, paths, durations and dates: exit 2 and one ``Error:`` line, never a traceback.

Every value here is rejected before any request, so these run without a backend.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logits_cli.cli.timeparse import parse_point_in_time, parse_ttl
from logits_cli.errors import UsageError
from logits_cli.uri import NAME_RE, CheckpointRef
from tests.cli.conftest import invoke

FUZZ = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


def rejects(parse, value: str) -> bool:
    try:
        parse(value)
    except UsageError:
        return True
    return False


def assert_usage_error(args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    # One Error: line, and at most one Hint: line after it (docs/ARCHITECTURE.md §4).
    assert lines and lines[0].startswith("Error: "), result.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("Hint: ")), result.stderr
    assert "Traceback" not in result.stderr


@FUZZ
@given(text.filter(lambda n: not NAME_RE.fullmatch(n)))
def test_bad_checkpoint_names(name: str) -> None:
    assert_usage_error(["ckpt", "save", "--run", "r", "--", name])


@FUZZ
@given(text.filter(lambda p: rejects(lambda v: CheckpointRef.parse(v, allow_latest=True), p)))
def test_bad_checkpoint_paths(path: str) -> None:
    assert_usage_error(["ckpt", "info", "--", path])


@FUZZ
@given(
    st.one_of(
        text,
        st.builds(lambda n, u: f"{n}{u}", st.integers(-10, 10**12), st.sampled_from("smhdwy ")),
    ).filter(lambda d: rejects(parse_ttl, d))
)
def test_bad_durations(duration: str) -> None:
    assert_usage_error(["ckpt", "ttl", "logits://r/weights/a", f"--set={duration}"])


@FUZZ
@given(text.filter(lambda d: rejects(parse_point_in_time, d)))
def test_bad_dates(when: str) -> None:
    assert_usage_error(["ckpt", "ls", f"--since={when}"])
