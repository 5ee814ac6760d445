"""``ckpt export`` of adapters our server made (the service's raw format, issue 24 item 1)
equals tinker-cookbook 0.6.1's ``build_lora_adapter`` of the same download, for every family.

The tiny configs are those of tests/server/raw_adapter_driver.py (written by transformers);
a real server over 127.0.0.1 is started with them (``--model-config``); per family a run is
created and saved, then exported from its checkpoint path (the export downloads it) and,
for the cookbook, downloaded. Needs ``$LOGITS_TORCH_PYTHON``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import invoke

pytestmark = pytest.mark.slow
SERVER_DRIVER = Path(__file__).parents[1] / "server" / "raw_adapter_driver.py"
DRIVER = Path(__file__).with_name("torch_driver.py")
FAMILIES = ["gpt-oss", "llama-tied", "llama-untied", "qwen3-moe", "qwen3-tied", "qwen3-untied"]
FAMILIES += ["qwen3.5-moe", "qwen3.5-tied"]
PEFT_LOADED = {"llama-untied", "qwen3-untied"}


def run_driver(torch_python: str, script: Path, *args: str) -> str:
    done = subprocess.run(
        [torch_python, str(script), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def ok(*args: str) -> str:
    result = invoke(args)
    assert result.exit_code == 0, result.stderr or result.stdout
    return str(result.stdout).strip()


@pytest.fixture(scope="module")
def exports(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    configs = tmp_path_factory.mktemp("configs")
    assert json.loads(run_driver(torch_python, SERVER_DRIVER, "configs", str(configs))) == FAMILIES
    settings = ServerSettings(
        model_configs=tuple(f"tiny/{f}={configs / f / 'config.json'}" for f in FAMILIES)
    )
    work = tmp_path_factory.mktemp("work")
    with (
        start_in_thread(tmp_path_factory.mktemp("server-home"), settings) as running,
        pytest.MonkeyPatch.context() as env,
    ):
        for name in [n for n in os.environ if n.startswith(("LOGITS_", "TINKER_"))]:
            env.delenv(name)
        env.setenv("LOGITS_HOME", str(tmp_path_factory.mktemp("client-home")))
        env.setenv("LOGITS_BASE_URL", running.base_url)
        env.setenv("LOGITS_API_KEY", running.store.create_api_key("alice"))
        for family in FAMILIES:
            model = work / family / "model"
            run_driver(torch_python, DRIVER, "save-model", str(configs / family), str(model))
            run = ok("runs", "create", "--base-model", f"tiny/{family}", "--rank", "4", "-q")
            path = ok("ckpt", "save", "s", "--run", run, "-q")  # a training checkpoint
            ok("ckpt", "download", path, "-o", str(work / family), "-q")
            out = work / family / "peft"
            ok("ckpt", "export", path, "-o", str(out), "--base-config", str(model), "-q")
    return {family: work / family for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_export_of_a_server_adapter_equals_the_cookbook(
    exports: dict[str, Path], family: str, torch_python: str
) -> None:
    case = exports[family]
    assert (case / "s" / "optimizer_state.safetensors").exists()  # the download has it
    assert sorted(p.name for p in (case / "peft").iterdir()) == [
        ".logits-export.json",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    extra = ["--peft"] if family in PEFT_LOADED else []
    args = [str(case / "model"), str(case / "s"), str(case / "peft"), str(case / "cookbook")]
    compared = json.loads(run_driver(torch_python, DRIVER, "compare", *args, *extra))
    assert compared["problems"] == [], compared
    if family in PEFT_LOADED:
        assert compared["peft_loaded"] == compared["tensors"]
