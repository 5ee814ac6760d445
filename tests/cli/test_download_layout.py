"""Where ``logits ckpt download -o DIR`` puts checkpoints (issue 23 point 5), and the JSON
names of what it and ``verify`` print (point 11), on both backends.

The help's own pipe is run verbatim, in a real bash, against a run that has the cookbook's
pattern (``weights/X`` beside ``sampler_weights/X``): names that clash make every checkpoint
of the command go to DIR/RUN/KIND/NAME, sync's layout, so a later ``sync`` finds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from logits_cli.api.sync import checkpoint_dir
from logits_cli.api.verify import MANIFEST_NAME
from logits_cli.uri import CheckpointRef
from tests.cli.conftest import Cli

PIPE_EXAMPLE = "logits ckpt ls -q RUN | xargs logits ckpt download -o ./ckpts"
SUBPROCESS_LIMIT_S = 120  # a guard against a hung process only


def _bash(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``line`` in a real bash, with this venv's ``logits`` first on PATH and the test's
    environment (LOGITS_HOME, and LOGITS_BASE_URL/LOGITS_API_KEY on the socket backend)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {line}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_LIMIT_S,
    )


def test_the_help_pipe_works_verbatim_when_weights_and_sampler_share_a_name(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    help_text = cli.ok("ckpt", "download", "--help").stdout
    assert PIPE_EXAMPLE in [line.strip() for line in help_text.splitlines()]
    cli.ok("ckpt", "save", "X")
    cli.ok("ckpt", "save", "X", "--sampler")
    cli.ok("ckpt", "save", "Y")
    listed = cli.lines("ckpt", "ls", "-q", run)
    assert len(listed) == 3

    result = _bash(PIPE_EXAMPLE.replace("RUN", run), tmp_path)

    assert result.returncode == 0, result.stderr
    ckpts = Path("ckpts")
    expected = [str(checkpoint_dir(ckpts, CheckpointRef.parse(p))) for p in listed]
    assert result.stdout.splitlines() == expected
    x_weights, x_sampler = f"logits://{run}/weights/X", f"logits://{run}/sampler_weights/X"
    first, second = sorted([x_weights, x_sampler], key=listed.index)
    assert result.stderr.splitlines()[0] == (
        f"{first} and {second} share a name: each checkpoint goes to "
        "ckpts/RUN/KIND/NAME, as sync lays them out"
    )
    run_dir = tmp_path / "ckpts" / run.replace(":", "%3A")
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("*/*")) == [
        "sampler_weights/X",
        "weights/X",
        "weights/Y",
    ]
    assert (run_dir / "weights" / "X" / "optimizer_state.safetensors").is_file()
    assert not (run_dir / "sampler_weights" / "X" / "optimizer_state.safetensors").exists()
    # The same layout as sync: sync of the run finds all three present and fetches nothing.
    synced = json.loads(cli.ok("ckpt", "sync", run, "-o", str(tmp_path / "ckpts"), "--json").stdout)
    assert synced["counts"]["present"] == 3 and synced["bytes_fetched"] == 0
    # And the pipe again: every checkpoint is present, nothing fetched.
    again = _bash(PIPE_EXAMPLE.replace("RUN", run), tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == expected
    assert "downloaded 0 of 3 (3 already present)" in again.stderr


def test_unique_names_keep_dir_name(cli: Cli, run: str, tmp_path: Path) -> None:
    weights = cli.ok("ckpt", "save", "a", "-q").stdout.strip()
    sampler = cli.ok("ckpt", "save", "b", "--sampler", "-q").stdout.strip()
    result = cli.ok("ckpt", "download", weights, sampler, "-o", str(tmp_path))
    assert result.stdout.splitlines() == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert "share a name" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_the_same_checkpoint_in_both_schemes_is_no_clash(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    weights = cli.ok("ckpt", "save", "same", "-q").stdout.strip()
    tinker = weights.replace("logits://", "tinker://")
    result = cli.ok("ckpt", "download", weights, tinker, "-o", str(tmp_path))
    assert result.stdout.splitlines() == [str(tmp_path / "same")]  # named twice, fetched once
    assert "share a name" not in result.stderr


def test_latest_of_both_kinds_resolving_to_one_name_clash(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    cli.ok("ckpt", "save", "final")
    cli.ok("ckpt", "save", "final", "--sampler")
    latest = [f"logits://{run}/weights/@latest", f"logits://{run}/sampler_weights/@latest"]
    result = cli.ok("ckpt", "download", *latest, "-o", str(tmp_path), "--json")
    run_dir = tmp_path / run.replace(":", "%3A")
    answer = json.loads(result.stdout)
    assert [(r["path"], r["local_path"]) for r in answer] == [
        (f"logits://{run}/weights/final", str(run_dir / "weights" / "final")),
        (f"logits://{run}/sampler_weights/final", str(run_dir / "sampler_weights" / "final")),
    ]


def test_json_path_is_the_uri_and_local_path_the_directory_in_download_and_verify(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    saved = json.loads(cli.ok("ckpt", "save", "j1", "--json").stdout)
    downloaded = json.loads(
        cli.ok("ckpt", "download", saved["tinker_path"], "-o", str(tmp_path), "--json").stdout
    )
    assert [(r["path"], r["local_path"]) for r in downloaded] == [
        (saved["tinker_path"], str(tmp_path / "j1"))
    ]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_NAME).write_text("not json")
    result = cli("ckpt", "verify", str(tmp_path), "--json")
    assert result.exit_code == 7
    assert json.loads(result.stdout) == [
        {
            "path": None,
            "local_path": str(tmp_path / "broken"),
            "ok": False,
            "problems": [f"{tmp_path / 'broken'}: {MANIFEST_NAME} is unreadable"],
        },
        {
            "path": saved["tinker_path"],
            "local_path": str(tmp_path / "j1"),
            "ok": True,
            "problems": [],
        },
    ]
