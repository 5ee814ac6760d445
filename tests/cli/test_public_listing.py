"""``ckpt ls --public`` lists the public checkpoints of every user, as the list of accessible
runs shows them, with their owner (issue 23 point 9). Real servers over 127.0.0.1: the
embedded backend has one user."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.cli.conftest import invoke


class Users:
    """Switches the CLI between users of one live server."""

    def __init__(self, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys = {user: server.api_key(user) for user in ("alice", "bob", "carol")}
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)

    def __call__(self, user: str, *args: str) -> Any:
        self.monkeypatch.setenv("LOGITS_API_KEY", self.keys[user])
        return invoke(args)

    def ok(self, user: str, *args: str) -> str:
        result = self(user, *args)
        assert result.exit_code == 0, (user, args, result.stdout, result.stderr)
        return str(result.stdout)

    def saved(self, user: str, *names: str, publish: tuple[str, ...] = ()) -> dict[str, str]:
        run_id = self.ok(user, "runs", "create", "-m", "logits/tiny", "--rank", "2", "-q")
        paths = {
            n: self.ok(user, "ckpt", "save", n, "--run", run_id.strip(), "-q").strip()
            for n in names
        }
        for name in publish:
            self.ok(user, "ckpt", "publish", paths[name])
        return paths


@pytest.fixture
def users(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> Users:
    return Users(live_server, monkeypatch)


def test_public_lists_every_users_public_checkpoints_with_the_owner(users: Users) -> None:
    alice = users.saved("alice", "a1", "a2", publish=("a1",))
    bob = users.saved("bob", "b1", "b2", publish=("b2",))
    users.saved("carol", "c1")  # nothing public: carol's run is not accessible to others
    # Newest first: bob's published after alice's.
    assert users.ok("bob", "ckpt", "ls", "--public", "-q").splitlines() == [bob["b2"], alice["a1"]]
    assert users.ok("carol", "ckpt", "ls", "--public", "-q").splitlines() == [
        bob["b2"],
        alice["a1"],
    ]
    assert users.ok("bob", "ckpt", "ls", "--public", "--mine", "-q").splitlines() == [bob["b2"]]
    assert users.ok("bob", "ckpt", "ls", "--private", "-q").splitlines() == [bob["b1"]]
    assert users.ok("bob", "ckpt", "ls", "-q").splitlines() == [bob["b2"], bob["b1"]]
    listed = json.loads(users.ok("bob", "ckpt", "ls", "--public", "--json"))
    assert [(c["tinker_path"], c["owner"], c["public"]) for c in listed] == [
        (bob["b2"], "bob", True),
        (alice["a1"], "alice", True),
    ]
    # Piped rows keep their documented columns: NAME TYPE SIZE PUBLIC CREATED EXPIRES PATH.
    rows = [line.split("\t") for line in users.ok("bob", "ckpt", "ls", "--public").splitlines()]
    assert [(r[0], r[3], r[6]) for r in rows] == [
        ("b2", "true", bob["b2"]),
        ("a1", "true", alice["a1"]),
    ]
    # Unpublished: gone from everyone's listing at once.
    users.ok("alice", "ckpt", "unpublish", alice["a1"])
    assert users.ok("carol", "ckpt", "ls", "--public", "-q").splitlines() == [bob["b2"]]
    # The explicit run of another user: its public checkpoints, as before.
    run_of_bob = bob["b2"].split("/")[2]
    assert users.ok("alice", "ckpt", "ls", run_of_bob, "-q").splitlines() == [bob["b2"]]
    assert users.ok("alice", "ckpt", "ls", run_of_bob, "--mine", "-q") == ""


@pytest.mark.slow
def test_the_owner_column_on_a_terminal(users: Users, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli.test_terminal import run_on_terminal

    users.saved("alice", "a1", publish=("a1",))
    users.saved("bob", "b1", publish=("b1",))
    monkeypatch.setenv("LOGITS_API_KEY", users.keys["bob"])
    code, screen = run_on_terminal(["ckpt", "ls", "--public"], columns=160)
    assert code == 0, screen
    header = next(line for line in screen.splitlines() if "OWNER" in line)
    assert "PUBLIC" not in header  # always yes here
    owners = re.findall(r"\b(alice|bob)\b", screen)
    assert sorted(set(owners)) == ["alice", "bob"], screen
