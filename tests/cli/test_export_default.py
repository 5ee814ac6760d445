"""Current (files-generation) deployments: ``sync`` and ``download`` export weights/ by default
(issue 23 point 1), ``--no-export`` skips them with exit 10; download's failures in one line
each, the path once, with "did you mean" (point 7). A real server over a socket started as
``logits server start --uri-scheme tinker --downloads files``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from logits_cli import config
from logits_cli.api import open_client
from logits_cli.api.sync import checkpoint_dir
from logits_cli.api.verify import MANIFEST_NAME
from logits_cli.uri import CheckpointRef
from tests.cli.conftest import invoke
from tests.cli.test_terminal import run_on_terminal

REPO = Path(__file__).resolve().parents[2]
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
WAIT_LIMIT_S = 120.0
EXPORT_HINT = (
    "Hint: drop --no-export to export (one training session on the service per checkpoint)"
)


@pytest.fixture
def current(server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A files-generation server writing tinker:// paths, and a run with weights/w1 and
    sampler_weights/step_1000_s."""
    server = server_factory(downloads="files", uri_scheme="tinker")
    key = server.api_key("alice")
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", key)
    settings = config.resolve(base_url=server.base_url, env={"LOGITS_API_KEY": key})

    async def make() -> tuple[str, list[str]]:
        async with open_client(settings) as client:
            run = (await client.create_run("logits/tiny", rank=2)).training_run_id
            saved = [await client.save(run, "w1")]
            saved.append(await client.save(run, "step_1000_s", sampler=True))
            return run, [c.tinker_path for c in saved]

    server.run, (server.weights, server.sampler) = asyncio.run(make())
    server.key = key
    return server


def readme_crontab_line() -> str:
    """The command of README's crontab line (after its five time fields), as printed."""
    text = (REPO / "README.md").read_text()
    block = text.split("### A crontab line", 1)[1].split("```crontab", 1)[1].split("```", 1)[0]
    (line,) = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    return line.split(None, 5)[5]


def test_the_readme_cron_line_mirrors_weights_of_a_current_deployment(
    current: Any, tmp_path: Path
) -> None:
    logits = tmp_path / "bin" / "logits"  # what /opt/logits/bin/logits is in the README
    logits.parent.mkdir()
    pythonpath = os.environ.get("PYTHONPATH", "")
    logits.write_text(
        f'#!/bin/sh\nPYTHONPATH={shlex.quote(pythonpath)} exec {sys.executable} -m logits_cli "$@"\n'
    )
    logits.chmod(0o755)
    (tmp_path / "key").write_text(current.key + "\n")
    command = (
        readme_crontab_line()
        .replace("https://logits.example.org", current.base_url)
        .replace("/etc/logits/key", str(tmp_path / "key"))
        .replace("/opt/logits/bin/logits", str(logits))
        .replace("/data/checkpoints", str(tmp_path / "mirror"))
        .replace("/var/log/logits-sync.log", str(tmp_path / "sync.log"))
    )
    cron = ["/usr/bin/env", "-i", f"HOME={tmp_path}", "PATH=/usr/bin:/bin", "/bin/sh", "-c"]

    first = subprocess.run([*cron, command], capture_output=True, text=True, timeout=WAIT_LIMIT_S)
    log = (tmp_path / "sync.log").read_text()
    assert first.returncode == 0, log
    lines = log.splitlines()
    assert all(re.match(TIMESTAMP, line) for line in lines), lines
    w1 = checkpoint_dir(tmp_path / "mirror", CheckpointRef.parse(current.weights))
    sampler_dir = checkpoint_dir(tmp_path / "mirror", CheckpointRef.parse(current.sampler))
    items = [line.split(" ", 1)[1] for line in lines[:-1]]
    exporting = (
        f"exporting {current.weights}: this deployment downloads file by file, which starts "
        "a training session on the service"
    )
    downloaded = f"downloaded {current.weights} -> {w1}"
    assert sorted(items) == sorted(
        [
            exporting,
            downloaded,
            f"skipped {current.sampler} -> {sampler_dir}: this deployment cannot download "
            "sampler checkpoints: it has no archive downloads (files generation)",
        ]
    )
    assert items.index(exporting) < items.index(downloaded)  # the two items run at once
    assert re.fullmatch(TIMESTAMP + r"sync: 1 downloaded, 1 skipped in \S+ s, .*", lines[-1])
    assert current.weights.startswith("tinker://")
    assert sorted(p.name for p in w1.iterdir()) == [
        MANIFEST_NAME,
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert json.loads((w1 / MANIFEST_NAME).read_text())["tinker_path"] == current.weights

    # The next night: present, no new export, still exit 0.
    again = subprocess.run([*cron, command], capture_output=True, text=True, timeout=WAIT_LIMIT_S)
    new = (tmp_path / "sync.log").read_text()[len(log) :].splitlines()
    assert again.returncode == 0, new
    assert [line.split(" ", 1)[1].split(" in ")[0] for line in new] == [
        f"skipped {current.sampler} -> {sampler_dir}: this deployment cannot download sampler "
        "checkpoints: it has no archive downloads (files generation)",
        "sync: 1 present, 1 skipped",
    ]


def test_sync_no_export_skips_weights_with_exit_10_and_says_why(
    current: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "mirror"
    result = invoke(["ckpt", "sync", "-o", str(dest), "--no-export"])
    assert result.exit_code == 10, result.stderr
    assert result.stdout == ""
    *items, summary, error, hint = result.stderr.splitlines()
    weights_dir = checkpoint_dir(dest, CheckpointRef.parse(current.weights))
    assert (
        f"skipped {current.weights} -> {weights_dir}: this deployment (files generation, no "
        "archive downloads) downloads it only through an export, which starts a training "
        "session on the service, and exporting is off"
    ) in [line.split(" ", 1)[1] for line in items]
    assert re.fullmatch(
        TIMESTAMP + r"sync: 2 skipped \(1 not exported: --no-export\) in \S+ s", summary
    ), summary
    assert error == (
        "Error: 1 weights/ checkpoint not mirrored: this deployment downloads them only "
        "through an export, and --no-export was given"
    )
    assert hint == EXPORT_HINT
    assert not weights_dir.exists()

    as_json = invoke(["ckpt", "sync", "-o", str(dest), "--no-export", "--json"])
    assert as_json.exit_code == 10
    summary_json = json.loads(as_json.stdout)
    assert summary_json["not_exported"] == 1
    assert {i["tinker_path"]: i["needs_export"] for i in summary_json["items"]} == {
        current.weights: True,
        current.sampler: False,
    }


def test_download_no_export_is_exit_10_and_url_still_asks_for_export(
    current: Any, tmp_path: Path
) -> None:
    refused = invoke(
        ["ckpt", "download", "w1", "--run", current.run, "--no-export", "-o", str(tmp_path)]
    )
    assert (refused.exit_code, refused.stdout) == (10, "")
    assert refused.stderr == (
        f"Error: {current.weights}: this deployment (files generation, no archive downloads) "
        "downloads it only through an export, which starts a training session on the "
        f"service, and exporting is off\n{EXPORT_HINT}\n"
    )
    assert not (tmp_path / "w1").exists()
    url = invoke(["ckpt", "url", current.weights])
    assert url.exit_code == 10
    assert url.stderr.splitlines()[-1] == (
        "Hint: pass --export to allow it (the export is kept for an hour)"
    )


def test_download_run_option_names_bare_paths_in_the_servers_scheme(
    current: Any, tmp_path: Path
) -> None:
    result = invoke(["ckpt", "download", "w1", "--run", current.run, "-o", str(tmp_path)])
    assert (result.exit_code, result.stdout) == (0, f"{tmp_path}/w1\n"), result.stderr
    assert [
        re.sub("^" + TIMESTAMP, "", line).split(" (")[0] for line in result.stderr.splitlines()
    ] == [
        f"exporting {current.weights}: this deployment downloads file by file, which starts "
        "a training session on the service",
        f"downloaded {current.weights} -> {tmp_path}/w1",
    ]


def test_a_missing_checkpoint_is_one_line_with_did_you_mean(current: Any, tmp_path: Path) -> None:
    missing = current.sampler.replace("/sampler_weights/", "/weights/")
    bare = invoke(["ckpt", "download", "step_1000_s", "--run", current.run, "-o", str(tmp_path)])
    assert (bare.exit_code, bare.stdout) == (4, "")
    assert bare.stderr == (
        f"Error: checkpoint {missing} not found\nHint: did you mean sampler_weights/step_1000_s?\n"
    )
    # A full path gets a full path; a name one edit away is suggested too.
    typo = invoke(["ckpt", "download", current.sampler[:-1] + "x", "-o", str(tmp_path)])
    assert typo.exit_code == 4
    assert typo.stderr.splitlines()[1] == f"Hint: did you mean {current.sampler}?"

    # Piped, several: one timestamped line per failure, the path once, then the count.
    both = invoke(
        ["ckpt", "download", "step_1000_s", "w1", "--run", current.run, "-o", str(tmp_path)]
    )
    assert (both.exit_code, both.stdout) == (8, f"{tmp_path}/w1\n")
    lines = both.stderr.splitlines()
    assert both.stderr.count("step_1000_s") == 2  # the failure's path, and the suggestion
    failed = [line for line in lines if " failed " in line]
    assert [re.sub("^" + TIMESTAMP, "", line) for line in failed] == [
        f"failed {missing}: checkpoint not found; did you mean sampler_weights/step_1000_s?"
    ]
    assert lines[-1] == "Error: 1 of 2 checkpoints could not be downloaded"
    assert [line for line in lines if line.startswith(("Error", "Hint"))] == [lines[-1]]


def test_on_a_terminal_each_failure_is_one_error_line_without_a_log_line(
    current: Any, tmp_path: Path
) -> None:
    missing = current.sampler.replace("/sampler_weights/", "/weights/")
    env = {"LOGITS_BASE_URL": current.base_url, "LOGITS_API_KEY": current.key}
    code, screen = run_on_terminal(
        ["ckpt", "download", "step_1000_s", "w1", "--run", current.run, "-o", str(tmp_path)],
        env=env,
    )
    assert code == 8, screen
    messages = [line for line in screen.splitlines() if line.startswith(("Error", "Hint"))]
    assert messages == [
        f"Error: {missing}: checkpoint not found",
        "Hint: did you mean sampler_weights/step_1000_s?",
        "Error: 1 of 2 checkpoints could not be downloaded",
    ]
    assert not re.search(TIMESTAMP + "failed", screen)
    assert screen.count(missing) == 1

    code, screen = run_on_terminal(
        ["ckpt", "download", "step_1000_s", "--run", current.run, "-o", str(tmp_path)], env=env
    )
    assert code == 4
    assert [line for line in screen.splitlines() if line.strip()][-2:] == [
        f"Error: checkpoint {missing} not found",
        "Hint: did you mean sampler_weights/step_1000_s?",
    ]


def test_the_cli_names_the_flag_of_a_library_option(current: Any, tmp_path: Path) -> None:
    archive = invoke(["ckpt", "download", current.weights, "--archive-only", "-o", str(tmp_path)])
    assert archive.exit_code == 10
    assert archive.stderr == (
        f"Error: {current.weights} has no archive on this deployment: it is downloaded file "
        "by file\n"
        "Hint: drop --archive-only; the files are installed in DIR/NAME\n"
    )
    ok = invoke(["ckpt", "download", current.weights, "-o", str(tmp_path)])
    assert ok.exit_code == 0, ok.stderr
    (tmp_path / "w1" / ".logits-checkpoint.json").unlink()  # no longer our download
    taken = invoke(["ckpt", "download", current.weights, "-o", str(tmp_path)])
    assert taken.exit_code == 5
    assert taken.stderr.splitlines()[-1] == "Hint: pass --force to replace it"


def test_concurrent_exports_never_finish_a_session_another_export_uses(
    current: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync --jobs 3`` exports three checkpoints of one client: each export's session is
    finished once its export exists, so a second export must not be mid-way in it."""
    from logits_cli.api.client import LogitsClient

    async def save_more() -> None:
        settings = config.resolve(base_url=current.base_url, env={"LOGITS_API_KEY": current.key})
        async with open_client(settings) as client:
            for name in ("w2", "w3"):
                await client.save(current.run, name)

    asyncio.run(save_more())
    in_flight: dict[str, int] = {}
    finished_under_an_export: list[str] = []
    create, save, finish = (
        LogitsClient.create_run_from,
        LogitsClient.save_external,
        LogitsClient.finish_session,
    )

    session_of_run: dict[str, str] = {}

    async def tracked_create(self: LogitsClient, *args: Any, **kwargs: Any) -> Any:
        session = await self.session_id()  # the session make_export has just read
        in_flight[session] = in_flight.get(session, 0) + 1
        run_id = await create(self, *args, **kwargs)
        session_of_run[run_id] = session
        return run_id

    async def tracked_save(self: LogitsClient, run_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await save(self, run_id, *args, **kwargs)
        finally:
            in_flight[session_of_run[run_id]] -= 1

    async def tracked_finish(self: LogitsClient, session_id: str | None = None) -> None:
        if in_flight.get(session_id or "", 0):
            finished_under_an_export.append(session_id or "")
        await finish(self, session_id)

    monkeypatch.setattr(LogitsClient, "create_run_from", tracked_create)
    monkeypatch.setattr(LogitsClient, "save_external", tracked_save)
    monkeypatch.setattr(LogitsClient, "finish_session", tracked_finish)
    result = invoke(["ckpt", "sync", current.run, "-o", str(tmp_path), "--jobs", "3", "--json"])
    assert result.exit_code == 0, result.stderr
    statuses = [i["status"] for i in json.loads(result.stdout)["items"]]
    assert sorted(statuses) == ["downloaded"] * 3 + ["skipped"]
    assert finished_under_an_export == []
    assert result.stderr.count("exporting ") == 3


def test_a_sync_item_that_fails_names_its_path_once(
    current: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint deleted between the listing and its download (a real not-found)."""
    from logits_cli.api.client import LogitsClient

    download = LogitsClient.download

    async def deleted_first(self: LogitsClient, ref: CheckpointRef, *args: Any, **kw: Any) -> Any:
        if ref.kind == "weights":
            await self.delete(ref)
        return await download(self, ref, *args, **kw)

    monkeypatch.setattr(LogitsClient, "download", deleted_first)
    result = invoke(["ckpt", "sync", current.run, "-o", str(tmp_path)])
    assert result.exit_code == 8
    (failed,) = [line for line in result.stderr.splitlines() if " failed " in line]
    target = checkpoint_dir(tmp_path, CheckpointRef.parse(current.weights))
    assert failed.split(" ", 1)[1] == f"failed {current.weights} -> {target}: checkpoint not found"


def test_download_no_export_of_several_exits_10_only_when_every_failure_is_that(
    current: Any, tmp_path: Path
) -> None:
    async def save_w2() -> None:
        settings = config.resolve(base_url=current.base_url, env={"LOGITS_API_KEY": current.key})
        async with open_client(settings) as client:
            await client.save(current.run, "w2")

    asyncio.run(save_w2())
    args = ["ckpt", "download", "--run", current.run, "--no-export", "-o", str(tmp_path)]
    both = invoke([*args, "w1", "w2"])
    assert (both.exit_code, both.stdout) == (10, "")
    assert both.stderr.splitlines()[-2:] == [
        "Error: 2 of 2 checkpoints could not be downloaded: this deployment downloads them "
        "only through an export, and --no-export was given",
        EXPORT_HINT,
    ]
    mixed = invoke([*args, "w1", "sampler_weights/step_1000_s"])
    assert mixed.exit_code == 8
    assert mixed.stderr.splitlines()[-1] == "Error: 2 of 2 checkpoints could not be downloaded"
