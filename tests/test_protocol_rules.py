"""The TTL range and the access scopes are one rule each (logits_cli/protocol_rules.py), the
same for the client, the server and the store."""

from __future__ import annotations

import pytest

from logits_cli.errors import UsageError
from logits_cli.protocol_rules import (
    ACCESS_SCOPES,
    MAX_TTL_SECONDS,
    check_access_scope,
    check_ttl,
)


@pytest.mark.parametrize("ttl", [None, 1, 3600, MAX_TTL_SECONDS])
def test_ttls_in_range_pass(ttl: int | None) -> None:
    check_ttl(ttl)


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL_SECONDS + 1, 10**30, True, 1.5, "60", [1]])
def test_ttls_out_of_range_or_of_another_type_are_usage_errors(ttl: object) -> None:
    with pytest.raises(UsageError, match=f"from 1 to {MAX_TTL_SECONDS} seconds"):
        check_ttl(ttl)


def test_access_scopes() -> None:
    assert [check_access_scope(s) for s in ACCESS_SCOPES] == ["owned", "accessible"]
    for bad in ("all", "", None, "OWNED"):
        with pytest.raises(UsageError, match="'owned' or 'accessible'"):
            check_access_scope(bad)


def test_the_longest_cli_duration_is_the_longest_ttl() -> None:
    from logits_cli.cli.timeparse import parse_duration

    assert parse_duration("3650d") == MAX_TTL_SECONDS
    with pytest.raises(UsageError):
        parse_duration("3651d")
