"""Drives tinker-cookbook 0.6.1's checkpoint helpers (SDK 0.38.0) against a logits server.

Runs in the SDK 0.38 interpreter with TINKER_BASE_URL / TINKER_API_KEY set; ``argv[1]`` is a
scratch directory. Prints one JSON object.

``tinker_cookbook.weights/__init__.py`` imports its merge code, which needs torch; the
download helper itself (``weights/_download.py``) does not, so it is loaded from its file,
unmodified, under its own module name without running that ``__init__``.
"""

import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import tinker
import tinker_cookbook
from tinker_cookbook import checkpoint_utils


def _download_module():
    package_dir = Path(tinker_cookbook.__file__).parent / "weights"
    package = types.ModuleType("tinker_cookbook.weights")
    package.__path__ = [str(package_dir)]
    sys.modules["tinker_cookbook.weights"] = package
    spec = importlib.util.spec_from_file_location(
        "tinker_cookbook.weights._download", package_dir / "_download.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _files(directory):
    return sorted(p.name for p in Path(directory).iterdir() if not p.name.startswith("."))


def main():
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(sys.argv[1])
    log_dir = scratch / "run"
    log_dir.mkdir()
    out = {}
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model="logits/tiny", rank=4).result()
        out["model_id"] = training.model_id
        manager = checkpoint_utils.CheckpointManager(
            training_client=training,
            service_client=service,
            log_path=str(log_dir),
            save_every=2,
            rolling_save_every=1,
            ttl_seconds=7200,
            rolling_ttl_seconds=3600,
        )
        for step in range(1, 6):
            manager.maybe_save(step, {"batch": step})
        out["final"] = manager.save_final({"batch": 5})
        rest = tinker.RestClient()
        out["checkpoints"] = sorted(
            c.checkpoint_id for c in rest.list_checkpoints(training.model_id).result().checkpoints
        )
        last = checkpoint_utils.get_last_checkpoint(str(log_dir))
        out["last"] = {"name": last.name, "state_path": last.state_path}
        resumed = service.create_training_client_from_state_with_optimizer(last.state_path)
        out["resumed"] = resumed.result().get_info().lora_rank
        external = training.save_weights_external("adapter").result().path
    out["closed"] = True

    download = _download_module().download
    out["weights_download"] = _files(
        download(tinker_path=last.state_path, output_dir=str(scratch / "from_weights"))
    )
    out["external_download"] = _files(
        download(tinker_path=external, output_dir=str(scratch / "from_external"))
    )
    config = json.loads((scratch / "from_weights" / "adapter_config.json").read_text())
    out["adapter"] = [config["peft_type"], config["r"], config["base_model_name_or_path"]]
    out["same_adapter"] = (scratch / "from_weights" / "adapter_model.safetensors").read_bytes() == (
        scratch / "from_external" / "adapter_model.safetensors"
    ).read_bytes()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
