"""CheckpointRef: valid refs round-trip; invalid input is a UsageError that says what is wrong."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logits_cli.api.http import join_url
from logits_cli.errors import UsageError
from logits_cli.uri import KINDS, LATEST, NAME_RE, CheckpointRef, validate_name

NAME_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
NAME_REST = NAME_FIRST + ".-"

names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(NAME_FIRST),
    st.text(alphabet=NAME_REST, max_size=127),
)
# Run ids are opaque: anything printable without / \\ ? # % whitespace or control characters,
# and never a dot segment (".", "..").
run_ids = (
    st.text(
        alphabet=st.characters(
            min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="/\\?#%\x7f"
        ),
        min_size=1,
        max_size=60,
    )
    .filter(lambda s: not any(c.isspace() for c in s))
    .filter(lambda s: s.strip(".") != "")
)
schemes = st.sampled_from(["logits", "tinker"])
kinds = st.sampled_from(KINDS)


@given(schemes, run_ids, kinds, names)
def test_every_valid_ref_round_trips(scheme: str, run_id: str, kind: str, name: str) -> None:
    text = f"{scheme}://{run_id}/{kind}/{name}"
    ref = CheckpointRef.parse(text)
    assert (ref.scheme, ref.run_id, ref.kind, ref.name) == (scheme, run_id, kind, name)
    assert str(ref) == text
    assert CheckpointRef.parse(str(ref)) == ref


@given(schemes, run_ids, names)
def test_legacy_two_segment_form_means_weights(scheme: str, run_id: str, name: str) -> None:
    ref = CheckpointRef.parse(f"{scheme}://{run_id}/{name}")
    assert ref.kind == "weights"
    assert str(ref) == f"{scheme}://{run_id}/weights/{name}"


def test_run_ids_with_colons() -> None:
    run = "5f1e3c2a-8d4b-4c6e-9a7f-1b2c3d4e5f60:train:0"
    ref = CheckpointRef.parse(f"tinker://{run}/sampler_weights/final")
    assert ref.run_id == run
    assert ref.checkpoint_id == "sampler_weights/final"
    assert ref.checkpoint_type == "sampler"


def test_latest_selector_only_when_allowed() -> None:
    text = f"logits://run/weights/{LATEST}"
    assert CheckpointRef.parse(text, allow_latest=True).is_latest
    with pytest.raises(UsageError, match="must start with"):
        CheckpointRef.parse(text)


def test_unknown_kind_parses_only_for_listings() -> None:
    ref = CheckpointRef.parse("logits://run/future_weights/x", any_kind=True)
    assert ref.kind == "future_weights"
    with pytest.raises(UsageError, match="unknown checkpoint kind 'future_weights'"):
        CheckpointRef.parse("logits://run/future_weights/x")
    with pytest.raises(UsageError, match="invalid kind"):
        CheckpointRef.parse("logits://run/Future.W/x", any_kind=True)


def test_external_weights_is_a_known_kind() -> None:
    ref = CheckpointRef.parse("tinker://run/external_weights/x")
    assert (ref.kind, ref.checkpoint_type) == ("external_weights", "external")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "not a URI"),
        ("run/weights/x", "not a URI"),
        ("Logits://run/weights/x", "scheme 'Logits'"),
        ("https://run/weights/x", "scheme 'https'"),
        ("logits://run/weights/x/", "empty segment"),
        ("logits:///weights/x", "empty segment"),
        ("logits://run//x", "empty segment"),
        ("logits://run", "1 segments"),
        ("logits://a/weights/b/c", "4 segments"),
        ("logits://run/weights/x?y=1", "forbidden character '?'"),
        ("logits://run/weights/x#f", "forbidden character '#'"),
        ("logits://run/weights/x%2F", "forbidden character '%'"),
        ("logits://run/weights/a b", "forbidden character ' '"),
        ("logits://run/checkpoints/x", "unknown checkpoint kind 'checkpoints'"),
        ("logits://run/weights/..", "must start with"),
        ("logits://run/weights/.hidden", "must start with"),
        ("logits://run/weights/" + "a" * 129, "129 characters"),
        ("logits://run/weights/a+b", "'+'"),
    ],
)
def test_invalid_paths_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        CheckpointRef.parse(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@given(st.text(max_size=200))
def test_arbitrary_text_is_a_ref_or_a_usage_error(text: str) -> None:
    try:
        ref = CheckpointRef.parse(text)
    except UsageError as exc:
        assert str(exc)
        assert "\n" not in str(exc)
    else:
        assert CheckpointRef.parse(str(ref)) == ref


@given(st.text(max_size=140))
def test_name_grammar_matches_the_regex(name: str) -> None:
    if NAME_RE.fullmatch(name):
        assert validate_name(name) == name
    else:
        with pytest.raises(UsageError):
            validate_name(name)


# Segments built from dots, slashes, percent signs and a few letters: what an attacker tries.
hostile_text = st.text(alphabet="./%2eEfF\\ab:", max_size=30)


@given(hostile_text, st.sampled_from([*KINDS, "future_kind", "..", "%2e"]), hostile_text)
def test_no_parsed_ref_yields_a_request_path_other_than_the_one_it_names(
    run_id: str, kind: str, name: str
) -> None:
    """Issue 8 F1: whatever parses is sent to exactly the path it names; httpx's dot-segment
    folding or percent-decoding never re-targets it."""
    for any_kind in (False, True):
        text = f"logits://{run_id}/{kind}/{name}"
        try:
            ref = CheckpointRef.parse(text, any_kind=any_kind)
        except UsageError:
            continue
        endpoint = f"training_runs/{ref.run_id}/checkpoints/{ref.kind}/{ref.name}"
        url = httpx.URL(join_url("http://h.invalid/prefix", endpoint))
        expected = ["", "prefix", "api", "v1", "training_runs", run_id, "checkpoints", kind, name]
        assert url.raw_path.decode("ascii").split("/") == expected
        assert url.path.split("/") == expected


@pytest.mark.parametrize("run_id", [".", "..", "...", "a\\b"])
def test_dot_and_backslash_run_ids_are_refused(run_id: str) -> None:
    with pytest.raises(UsageError):
        CheckpointRef.parse(f"logits://{run_id}/weights/s1")


@pytest.mark.parametrize(
    "endpoint", ["training_runs/../checkpoints", "a/./b", "x/%2e%2E/y", "x/%2F/y", "runs/.../x"]
)
def test_join_url_refuses_dot_segments(endpoint: str) -> None:
    with pytest.raises(UsageError):
        join_url("http://h.invalid", endpoint)
