"""`logits ckpt …` in human (piped: TSV), --json and -q modes, on both backends."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cli.conftest import Cli

CHECKPOINT_KEYS = {
    "checkpoint_id",
    "checkpoint_type",
    "time",
    "tinker_path",
    "size_bytes",
    "public",
    "expires_at",
    "sha256",
    "user_metadata",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def save(cli: Cli, name: str, *extra: str) -> dict:
    return json.loads(cli.ok("ckpt", "save", name, "--json", *extra).stdout)


# -- save -----------------------------------------------------------------------------------


def test_save_prints_the_new_path_alone(cli: Cli, run: str) -> None:
    result = cli.ok("ckpt", "save", "step_1")
    assert result.stdout == f"logits://{run}/weights/step_1\n"
    assert result.stderr.startswith("Saved weights/step_1 (")


def test_save_json_is_the_checkpoint(cli: Cli, run: str) -> None:
    saved = save(cli, "step_1", "--sampler", "--ttl", "7d")
    assert set(saved) == CHECKPOINT_KEYS
    assert saved["checkpoint_id"] == "sampler_weights/step_1"
    assert saved["checkpoint_type"] == "sampler"
    assert saved["tinker_path"] == f"logits://{run}/sampler_weights/step_1"
    assert saved["public"] is False
    assert ISO.match(saved["time"]) and ISO.match(saved["expires_at"])
    ttl = parse_iso(saved["expires_at"]) - parse_iso(saved["time"])
    assert abs(ttl - timedelta(days=7)) < timedelta(minutes=1)
    assert re.fullmatch(r"[0-9a-f]{64}", saved["sha256"])
    listed = json.loads(cli.ok("ckpt", "ls", run, "--json").stdout)
    assert listed == [saved]


def test_save_quiet_prints_only_the_path(cli: Cli, run: str) -> None:
    result = cli.ok("ckpt", "save", "q1", "-q")
    assert result.stdout == f"logits://{run}/weights/q1\n"
    assert result.stderr == ""


def test_save_existing_name_is_a_conflict_and_overwrite_replaces(cli: Cli, run: str) -> None:
    cli.ok("ckpt", "save", "dup")
    result = cli("ckpt", "save", "dup")
    assert result.exit_code == 5
    assert result.stderr.splitlines() == [
        f"Error: save of weights/dup failed: checkpoint weights/dup already exists in run {run}",
        "Hint: pass --overwrite to replace it",
    ]
    assert result.stdout == ""
    cli.ok("ckpt", "save", "dup", "--overwrite")


def test_save_without_run_is_usage(cli: Cli) -> None:
    result = cli("ckpt", "save", "x")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "Error: no run given; pass --run RUN or set LOGITS_RUN"


def test_save_bad_name_fails_before_any_request(cli: Cli) -> None:
    result = cli("ckpt", "save", "../x", "--run", "r")
    assert (result.exit_code, result.stdout) == (2, "")
    assert (
        result.stderr == "Error: checkpoint name '../x' must start with a letter, a digit or '_'\n"
    )


# -- ls -------------------------------------------------------------------------------------


def test_ls_modes_and_filters(cli: Cli, run: str) -> None:
    a = save(cli, "a")
    b = save(cli, "b", "--sampler", "--ttl", "1d")
    assert cli.lines("ckpt", "ls", "-q") == [b["tinker_path"], a["tinker_path"]]
    assert cli.lines("ckpt", "ls", run) == [
        "\t".join(
            [
                "b",
                "sampler",
                str(b["size_bytes"]),
                "false",
                b["time"],
                b["expires_at"],
                b["tinker_path"],
            ]
        ),
        "\t".join(
            ["a", "training", str(a["size_bytes"]), "false", a["time"], "", a["tinker_path"]]
        ),
    ]
    assert json.loads(cli.ok("ckpt", "ls", "--json").stdout) == [b, a]
    assert cli.lines("ckpt", "ls", "-q", "--type", "training") == [a["tinker_path"]]
    assert cli.lines("ckpt", "ls", "-q", "--expiring-within", "48h") == [b["tinker_path"]]
    assert cli.lines("ckpt", "ls", "-q", "--sort", "name") == [a["tinker_path"], b["tinker_path"]]
    assert cli.lines("ckpt", "ls", "-q", "--limit", "1") == [b["tinker_path"]]
    assert cli.lines("ckpt", "ls", "-q", "--public") == []
    assert cli.lines("ckpt", "ls", "-q", "--private", "--since", "1h") == [
        b["tinker_path"],
        a["tinker_path"],
    ]
    assert cli.lines("ckpt", "ls", "-q", "--before", "2000-01-01") == []


def test_ls_empty_results(cli: Cli) -> None:
    assert json.loads(cli.ok("ckpt", "ls", "--json").stdout) == []
    assert cli.ok("ckpt", "ls", "-q").stdout == ""
    result = cli.ok("ckpt", "ls")
    assert (result.stdout, result.stderr) == ("", "No checkpoints.\n")


def test_ls_unknown_run_is_not_found(cli: Cli) -> None:
    result = cli("ckpt", "ls", "no-such-run")
    assert result.exit_code == 4
    assert result.stderr == "Error: training run no-such-run not found\n"


# -- info / url -----------------------------------------------------------------------------


def test_info_in_three_modes(cli: Cli, run: str) -> None:
    saved = save(cli, "i1")
    path = saved["tinker_path"]
    info = json.loads(cli.ok("ckpt", "info", f"logits://{run}/weights/@latest", "--json").stdout)
    assert info == {**saved, "base_model": "logits/tiny", "is_lora": True, "lora_rank": 2}
    assert cli.lines("ckpt", "info", path, "-q") == [path]
    assert cli.lines("ckpt", "info", path.replace("logits://", "tinker://")) == [
        f"path\t{path}",
        "type\ttraining",
        f"size\t{saved['size_bytes']}",
        "public\tfalse",
        f"created\t{saved['time']}",
        "expires\t",
        f"sha256\t{saved['sha256']}",
        "base model\tlogits/tiny",
        "lora rank\t2",
    ]


def test_info_unknown_checkpoint_is_not_found(cli: Cli, run: str) -> None:
    result = cli("ckpt", "info", f"logits://{run}/weights/nope")
    assert result.exit_code == 4
    assert result.stderr.startswith("Error: checkpoint ")
    assert "nope" in result.stderr and result.stdout == ""


def test_url_prints_the_signed_url_and_expiry(cli: Cli, run: str) -> None:
    saved = save(cli, "u1")
    result = cli.ok("ckpt", "url", saved["tinker_path"])
    (url,) = result.stdout.splitlines()
    answer = json.loads(cli.ok("ckpt", "url", saved["tinker_path"], "--json").stdout)
    assert set(answer) == {"path", "url", "expires"}
    assert answer["path"] == saved["tinker_path"]
    if cli.backend == "embedded":
        # The embedded server has no origin another program can reach: the URL is the
        # archive file itself, which curl reads, and it does not expire.
        assert url.startswith("file:///") and answer["expires"] is None
        archive = Path(url.removeprefix("file://"))
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == saved["sha256"]
        assert "logits-embedded.invalid" not in result.stdout + result.stderr
        assert "does not expire" in result.stderr
    else:
        assert url.startswith(("http://", "https://")) and "/api/v1/blobs/" in url
        assert result.stderr.startswith("Expires ")
        assert ISO.match(answer["expires"])
    assert cli.lines("ckpt", "url", saved["tinker_path"], "-q")[0].startswith(url[:8])


# -- publish / unpublish ------------------------------------------------------------------


def test_publish_and_unpublish_report_changes(cli: Cli, run: str) -> None:
    path = save(cli, "p1")["tinker_path"]
    published = json.loads(cli.ok("ckpt", "publish", path, "--json").stdout)
    assert published == [{"path": path, "public": True, "changed": True}]
    again = json.loads(cli.ok("ckpt", "publish", path, "--json").stdout)
    assert again == [{"path": path, "public": True, "changed": False}]
    assert cli.lines("ckpt", "ls", "-q", "--public") == [path]
    assert cli.lines("ckpt", "unpublish", path) == [f"{path}\tfalse\ttrue"]
    assert cli.lines("ckpt", "unpublish", path, "-q") == [path]


def test_publish_partial_failure_exits_8(cli: Cli, run: str) -> None:
    path = save(cli, "p2")["tinker_path"]
    missing = f"logits://{run}/weights/missing"
    result = cli("ckpt", "publish", path, missing, "--json")
    assert result.exit_code == 8
    assert json.loads(result.stdout) == [{"path": path, "public": True, "changed": True}]
    assert result.stderr.splitlines()[-1] == "Error: 1 of 2 checkpoints could not be published"


# -- rm -------------------------------------------------------------------------------------


def test_rm_requires_yes_without_a_terminal(cli: Cli, run: str) -> None:
    path = save(cli, "r1")["tinker_path"]
    result = cli("ckpt", "rm", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: refusing to delete without --yes when not on a terminal",
        "Hint: add --yes to confirm",
    ]
    assert cli.lines("ckpt", "ls", "-q") == [path]


def test_rm_by_path_dry_run_then_for_real(cli: Cli, run: str) -> None:
    path = save(cli, "r2")["tinker_path"]
    dry = json.loads(cli.ok("ckpt", "rm", path, "--dry-run", "--json").stdout)
    assert dry == {"dry_run": True, "deleted": [], "selected": [path], "kept": [], "failed": []}
    assert cli.lines("ckpt", "rm", f"logits://{run}/weights/@latest", "--yes", "-q") == [path]
    assert cli.lines("ckpt", "ls", "-q") == []


def test_rm_run_filters_keep_the_newest(cli: Cli, run: str) -> None:
    paths = [save(cli, f"k{i}")["tinker_path"] for i in range(4)]
    keep_name = save(cli, "pinned")["tinker_path"]
    sampler = save(cli, "s", "--sampler")["tinker_path"]
    too_many = cli("ckpt", "rm", "--run", run, "--type", "training", "--max-delete", "1", "--yes")
    assert too_many.exit_code == 2
    assert too_many.stderr.startswith("Error: 5 checkpoints matched, more than --max-delete 1")
    result = cli.ok(
        "ckpt", "rm", "--run", run, "--type", "training", "--keep-last", "2",
        "--keep-name", "pinned", "--yes", "--json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert sorted(report["deleted"]) == sorted(paths[:3])
    assert report["failed"] == [] and report["dry_run"] is False
    assert sorted(cli.lines("ckpt", "ls", "-q")) == sorted([paths[3], keep_name, sampler])


def test_rm_partial_failure_exits_8(cli: Cli, run: str) -> None:
    path = save(cli, "r3")["tinker_path"]
    missing = f"logits://{run}/weights/missing"
    result = cli("ckpt", "rm", path, missing, "--yes")
    assert result.exit_code == 8
    assert result.stdout == f"{path}\n"
    assert result.stderr.splitlines()[-1] == "Error: 1 of 2 checkpoints could not be deleted"


def test_rm_paths_and_run_are_exclusive(cli: Cli) -> None:
    result = cli("ckpt", "rm", "logits://r/weights/a", "--run", "r", "--yes")
    assert result.exit_code == 2
    assert result.stderr == "Error: give checkpoint paths or --run with filters, not both\n"


# -- ttl ------------------------------------------------------------------------------------


def test_ttl_set_extend_remove(cli: Cli, run: str) -> None:
    path = save(cli, "t1")["tinker_path"]
    (set_1d,) = json.loads(cli.ok("ckpt", "ttl", path, "--set", "1d", "--json").stdout)
    assert set(set_1d) == CHECKPOINT_KEYS
    first = parse_iso(set_1d["expires_at"])
    assert abs(first - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=1)
    (extended,) = json.loads(cli.ok("ckpt", "ttl", path, "--extend", "2d", "--json").stdout)
    assert abs(parse_iso(extended["expires_at"]) - (first + timedelta(days=2))) < timedelta(
        seconds=5
    )
    assert cli.lines("ckpt", "ttl", path, "--remove", "-q") == [path]
    assert cli.lines("ckpt", "ttl", path, "--remove") == [f"{path}\t"]
    # Never-expiring + extend counts from now.
    (from_now,) = json.loads(cli.ok("ckpt", "ttl", path, "--extend", "1h", "--json").stdout)
    expected = datetime.now(UTC) + timedelta(hours=1)
    assert abs(parse_iso(from_now["expires_at"]) - expected) < timedelta(minutes=1)


def test_ttl_needs_exactly_one_action(cli: Cli) -> None:
    result = cli("ckpt", "ttl", "logits://r/weights/a", "--set", "1d", "--remove")
    assert result.exit_code == 2
    assert result.stderr == "Error: give exactly one of --set, --extend or --remove\n"


def test_ttl_with_run_filters(cli: Cli, run: str) -> None:
    old = save(cli, "old")["tinker_path"]
    new = save(cli, "new")["tinker_path"]
    updated = json.loads(
        cli.ok("ckpt", "ttl", "--run", run, "--keep-last", "1", "--set", "3d", "--json").stdout
    )
    assert [c["tinker_path"] for c in updated] == [old]
    assert cli.lines("ckpt", "ls", "-q", "--expiring-within", "4d") == [old]
    assert new not in cli.lines("ckpt", "ls", "-q", "--expiring-within", "4d")


# -- download / verify / load ---------------------------------------------------------------


def test_download_prints_destinations_and_logs_to_stderr(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    saved = save(cli, "d1")
    result = cli.ok("ckpt", "download", saved["tinker_path"], "-o", str(tmp_path))
    assert result.stdout == f"{tmp_path / 'd1'}\n"
    (line,) = result.stderr.splitlines()
    assert (
        LOG_LINE.match(line) and f"downloaded {saved['tinker_path']} -> {tmp_path / 'd1'}" in line
    )
    assert (tmp_path / "d1" / "checkpoint_complete").is_file()
    again = json.loads(
        cli.ok("ckpt", "download", saved["tinker_path"], "-o", str(tmp_path), "--json").stdout
    )
    assert again == [
        {
            "path": saved["tinker_path"],
            "local_path": str(tmp_path / "d1"),
            "size_bytes": saved["size_bytes"],
            "bytes_fetched": 0,
            "skipped": True,
            "resumed": False,
        }
    ]
    assert cli.lines("ckpt", "verify", str(tmp_path), "-q") == [str(tmp_path / "d1")]
    verified = json.loads(cli.ok("ckpt", "verify", str(tmp_path / "d1"), "--json").stdout)
    assert verified == [
        {
            "path": saved["tinker_path"],
            "local_path": str(tmp_path / "d1"),
            "ok": True,
            "problems": [],
        }
    ]


def test_verify_detects_a_modified_file(cli: Cli, run: str, tmp_path: Path) -> None:
    saved = save(cli, "v1")
    cli.ok("ckpt", "download", saved["tinker_path"], "-o", str(tmp_path), "-q")
    (tmp_path / "v1" / "adapter_config.json").write_text("{}")
    result = cli("ckpt", "verify", str(tmp_path))
    assert result.exit_code == 7
    assert result.stdout == f"{tmp_path / 'v1'}\tfalse\t{saved['tinker_path']}\n"
    assert result.stderr.splitlines()[-1] == "Error: 1 of 1 checkpoints failed verification"


def test_load_into_the_run(cli: Cli, run: str) -> None:
    path = save(cli, "l1")["tinker_path"]
    loaded = json.loads(cli.ok("ckpt", "load", path, "--with-optimizer", "--json").stdout)
    assert loaded == {"run": run, "path": path, "with_optimizer": True}
    assert cli.lines("ckpt", "load", f"logits://{run}/weights/@latest", "-q") == [path]


def test_load_latest_of_empty_run_is_not_found(cli: Cli, run: str) -> None:
    result = cli("ckpt", "load", f"logits://{run}/sampler_weights/@latest")
    assert result.exit_code == 4
    assert result.stderr.startswith("Error: ")


# -- sync -----------------------------------------------------------------------------------


def test_sync_fetches_what_is_missing_then_nothing(cli: Cli, run: str, tmp_path: Path) -> None:
    saved = save(cli, "s1")
    first = json.loads(cli.ok("ckpt", "sync", run, "-o", str(tmp_path), "--json").stdout)
    assert [(i["tinker_path"], i["status"]) for i in first["items"]] == [
        (saved["tinker_path"], "downloaded")
    ]
    assert cli.lines("ckpt", "verify", str(tmp_path), "-q") == [first["items"][0]["local_path"]]
    second = cli.ok("ckpt", "sync", run, "-o", str(tmp_path))
    assert second.stdout == ""
    # Present checkpoints are not logged one by one (an hourly job would repeat them all).
    [summary] = second.stderr.splitlines()
    assert LOG_LINE.match(summary)
    assert re.fullmatch(r"sync: 1 present in \d+\.\d s", summary.split(" ", 1)[1])
    verbose = cli.ok("ckpt", "sync", run, "-o", str(tmp_path), "-v").stderr.splitlines()
    assert [line.split(" ", 1)[1] for line in verbose[:-1]] == [
        f"present {saved['tinker_path']} -> {first['items'][0]['local_path']}"
    ]


def test_sync_summary_gives_bytes_and_speed(cli: Cli, run: str, tmp_path: Path) -> None:
    save(cli, "s1")
    summary = cli.ok("ckpt", "sync", run, "-o", str(tmp_path)).stderr.splitlines()[-1]
    assert re.fullmatch(
        r"sync: 1 downloaded in \d+\.\d s, [\d.]+ KiB at [\d.]+ [KMG]?i?B/s",
        summary.split(" ", 1)[1],
    ), summary


def test_sync_without_a_terminal_timestamps_every_line_and_names_planned_actions(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    from logits_cli.api.sync import checkpoint_dir
    from logits_cli.uri import CheckpointRef

    def local(checkpoint: dict) -> Path:
        return checkpoint_dir(tmp_path, CheckpointRef.parse(checkpoint["tinker_path"]))

    kept, gone = save(cli, "s1"), save(cli, "s2")
    cli.ok("ckpt", "sync", run, "-o", str(tmp_path), "-q")
    cli.ok("ckpt", "rm", gone["tinker_path"], "--yes", "-q")
    new = save(cli, "s3")

    result = cli.ok("ckpt", "sync", run, "-o", str(tmp_path), "--prune-local", "--dry-run")
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    *items, summary = [line.split(" ", 1)[1] for line in lines]
    assert items == [
        f"planned prune {gone['tinker_path']} -> {local(gone)}",
        f"planned download {new['tinker_path']} -> {local(new)}",
        f"present {kept['tinker_path']} -> {local(kept)}",
    ]
    assert re.fullmatch(r"sync: 2 planned, 1 present in \d+\.\d s", summary)
    assert local(gone).is_dir() and not local(new).exists()


# -- the same checkpoint or run named twice ---------------------------------------------------


def test_a_checkpoint_or_run_named_twice_counts_once(cli: Cli, run: str) -> None:
    path = save(cli, "twice")["tinker_path"]
    same = path.replace("logits://", "tinker://")
    assert cli.lines("ckpt", "ls", run, run, "-q") == [path]
    published = json.loads(cli.ok("ckpt", "publish", path, same, "--json").stdout)
    assert published == [{"path": path, "public": True, "changed": True}]
    latest = f"logits://{run}/weights/@latest"
    assert cli.lines("ckpt", "rm", path, same, latest, "--yes", "-q") == [path]
    assert cli.lines("ckpt", "ls", "-q") == []


def test_ttl_extend_past_ten_years_says_so(cli: Cli, run: str) -> None:
    path = save(cli, "far", "--ttl", "3649d")["tinker_path"]
    result = cli("ckpt", "ttl", path, "--extend", "2d")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "Error: extending it would make it expire more than 10 years from now, "
        "the longest allowed\n"
    )


def test_an_empty_date_or_duration_is_refused_not_ignored(cli: Cli, run: str) -> None:
    # `--before "$CUTOFF"` with CUTOFF unset must not select every checkpoint of the run.
    path = save(cli, "e1")["tinker_path"]
    for args in (
        ("ckpt", "rm", "--run", run, "--before", "", "--yes"),
        ("ckpt", "ttl", "--run", run, "--after", "", "--set", "1d"),
        ("ckpt", "ls", "--expiring-within", ""),
    ):
        result = cli(*args)
        assert (result.exit_code, result.stdout) == (2, ""), args
        assert result.stderr.startswith("Error: invalid "), args
    assert cli.lines("ckpt", "ls", "-q", "--expiring-within", "3650d") == []
    assert cli.lines("ckpt", "ls", "-q") == [path]


def test_an_empty_run_is_refused_not_replaced_by_logits_run(cli: Cli, run: str) -> None:
    for args in (("ckpt", "save", "x", "--run", ""), ("runs", "info", "")):
        result = cli(*args)
        assert (result.exit_code, result.stdout) == (2, ""), args
        assert result.stderr == "Error: the run id is empty\n", args
    assert cli.lines("ckpt", "ls", "-q") == []
