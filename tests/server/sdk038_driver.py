"""Drives the official tinker SDK 0.38.0 against a logits server; prints one JSON object.

Runs in the SDK's own interpreter: ``python sdk038_driver.py MODE [ARGS…]`` with
TINKER_BASE_URL and TINKER_API_KEY set. Imports only the SDK, its dependencies (numpy,
safetensors, pyrage) and the standard library. Modes:

* ``owner``: everything a user does with their own objects, the 0.38 way.
* ``other PATHS_JSON``: another user's view of the owner's objects.
"""

import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyrage
import tinker
from safetensors.numpy import load_file


def _fetch(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, response.read()


def _error(call):
    try:
        call()
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)[:300]
    return "succeeded"


def _adapter(files):
    """A valid PEFT LoRA adapter: its config and tensors agree."""
    config = json.loads(files["adapter_config.json"])
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "adapter_model.safetensors"
        path.write_bytes(files["adapter_model.safetensors"])
        tensors = load_file(str(path))
    ranks = {
        name: array.shape[0] if ".lora_A." in name else array.shape[1]
        for name, array in tensors.items()
    }
    return {
        "peft_type": config["peft_type"],
        "r": config["r"],
        "base_model": config["base_model_name_or_path"],
        "tensor_count": len(tensors),
        "ranks": sorted(set(ranks.values())),
        "all_lora": all(".lora_A." in n or ".lora_B." in n for n in tensors),
    }


def owner():
    out = {}
    with tinker.ServiceClient() as service:
        out["capabilities"] = [
            m.model_name
            for m in tinker.RestClient().get_server_capabilities().result().supported_models
        ]
        training = service.create_lora_training_client(
            base_model="logits/tiny", rank=4, seed=1, user_metadata={"purpose": "sdk038"}
        ).result()
        model_id = training.model_id
        out["model_id"] = model_id
        out["session_id"] = model_id.split(":")[0]
        info = training.get_info()
        out["info"] = {"name": info.model_data.model_name, "optimizer": info.optimizer_config.type}
        state = training.save_state("s1", user_metadata={"step": "1"}).result().path
        sampler = training.save_weights_for_sampler("p1").result().path
        out["state"], out["sampler"] = state, sampler
        external = training.save_weights_external("e1").result().path
        out["external"] = external
        identity = pyrage.x25519.Identity.generate()
        encrypted = training.save_weights_external(
            "e2", age_encryption_recipients=[str(identity.to_public())]
        ).result()
        out["encrypted"] = encrypted.path
        out["duplicate_export"] = _error(lambda: training.save_weights_external("e1").result())

        resumed = service.create_training_client_from_state(state).result()
        resumed_opt = service.create_training_client_from_state_with_optimizer(state).result()
        out["resumed"] = [resumed.model_id, resumed_opt.model_id]
        out["resumed_info"] = resumed.get_info().lora_rank
        dimuon = service.create_lora_training_client(
            base_model="logits/tiny", rank=4, optimizer=tinker.types.DimuonOptimizerConfig()
        ).result()
        out["dimuon_optimizer"] = dimuon.get_info().optimizer_config.type

        rest = tinker.RestClient()
        listed = rest.list_checkpoints(model_id).result().checkpoints
        out["listed"] = sorted((c.checkpoint_id, c.checkpoint_type) for c in listed)
        out["listed_metadata"] = {c.checkpoint_id: c.user_metadata for c in listed}
        user_listed = rest.list_user_checkpoints(limit=1000).result()
        out["user_checkpoint_types"] = sorted({c.checkpoint_type for c in user_listed.checkpoints})
        out["weights_info_optimizer"] = (
            rest.get_weights_info_by_tinker_path(state).result().optimizer_config.type
        )

        urls = rest.get_external_weights_urls(external).result()
        out["url_keys"] = sorted(urls.urls)
        files = {name: _fetch(url)[2] for name, url in urls.urls.items()}
        out["adapter"] = _adapter(files)
        model_url = urls.urls["adapter_model.safetensors"]
        status, headers, head = _fetch(model_url, {"Range": "bytes=0-9"})
        out["range"] = {
            "status": status,
            "length": len(head),
            "content_range": headers.get("content-range"),
            "etag": headers.get("etag"),
            "repr_digest": headers.get("repr-digest"),
            "accept_ranges": headers.get("accept-ranges"),
        }
        status, _, body = _fetch(model_url, {"Range": "bytes=0-9", "If-Range": '"sha256:00"'})
        out["if_range_mismatch"] = [status, len(body) == len(files["adapter_model.safetensors"])]
        try:
            _fetch(model_url, {"Range": f"bytes={len(files['adapter_model.safetensors'])}-"})
            out["unsatisfiable"] = "succeeded"
        except urllib.error.HTTPError as exc:
            out["unsatisfiable"] = [exc.code, exc.headers.get("Content-Range")]

        encrypted_urls = rest.get_external_weights_urls(encrypted.path).result().urls
        out["encrypted_keys"] = sorted(encrypted_urls)
        decrypted = {
            name.removesuffix(".age"): pyrage.decrypt(_fetch(url)[2], [identity])
            for name, url in encrypted_urls.items()
        }
        out["encrypted_adapter"] = _adapter(decrypted)

        rest.publish_checkpoint_from_tinker_path(external).result()
        out["external_public"] = [
            c.public
            for c in rest.list_checkpoints(model_id).result().checkpoints
            if c.tinker_path == external
        ]
        rest.publish_checkpoint_from_tinker_path(state).result()
        rest.set_checkpoint_ttl_from_tinker_path(encrypted.path, 7200).result()
        out["encrypted_expires"] = [
            c.expires_at is not None
            for c in rest.list_checkpoints(model_id).result().checkpoints
            if c.tinker_path == encrypted.path
        ]
        rest.delete_checkpoint_from_tinker_path(encrypted.path).result()
        out["after_delete"] = sorted(
            c.checkpoint_id for c in rest.list_checkpoints(model_id).result().checkpoints
        )
        out["deleted_url"] = _error(lambda: _fetch(encrypted_urls["adapter_config.json.age"]))

        with tinker.ServiceClient(project_id="proj-archive") as archive:
            out["copy_state"] = archive.copy_weights(state).result()
        out["copy_external"] = rest.copy_weights(external, "proj-archive").result()
        copy_run = out["copy_external"].split("/")[2]
        copied = rest.get_external_weights_urls(out["copy_external"]).result().urls
        out["copy_same_files"] = {
            name: _fetch(url)[2] == files[name] for name, url in copied.items()
        }
        out["copy_run"] = copy_run

        from_path = service.create_sampling_client(model_path=sampler).result()
        from_base = service.create_sampling_client(base_model="logits/tiny").result()
        bound = training.save_weights_and_get_sampling_client().result()
        out["sampling_base_models"] = [
            from_path.get_base_model(),
            from_base.get_base_model(),
            bound.get_base_model(),
        ]
        prompt = tinker.types.ModelInput.from_ints([1, 2, 3])
        params = tinker.types.SamplingParams(max_tokens=4)
        started = time.monotonic()
        out["sample_error"] = _error(lambda: from_path.sample(prompt, 1, params).result())
        out["sample_seconds"] = time.monotonic() - started
        out["missing_sampler"] = _error(
            lambda: service.create_sampling_client(
                model_path=f"tinker://{model_id}/sampler_weights/nope"
            ).result()
        )

        out["sessions"] = rest.list_sessions().result().sessions
        session = rest.get_session(out["session_id"]).result()
        out["session"] = {
            "training_run_ids": session.training_run_ids,
            "sampler_ids": session.sampler_ids,
        }
        found = rest.search_sessions(
            tinker.types.SessionSearchRequest(session_id=out["session_id"])
        ).result()
        out["search"] = [
            (s.session_id, s.status.type if s.status else None) for s in found.sessions
        ]
    # Leaving the with block finished the session (POST …/finish).
    print(json.dumps(out))


def other(paths):
    out = {}
    with tinker.ServiceClient() as service:
        rest = tinker.RestClient()
        out["private_sampler"] = _error(lambda: rest.get_sampler(paths["sampler_id"]).result())
        out["private_external_copy"] = _error(
            lambda: rest.copy_weights(paths["copy_external"], "p").result()
        )
        out["private_sampling"] = _error(
            lambda: service.create_sampling_client(model_path=paths["sampler"]).result()
        )
        out["private_load"] = _error(
            lambda: service.create_training_client_from_state(paths["copy_state"]).result()
        )
        # Public ones may be read, loaded and copied.
        forked = service.create_training_client_from_state(paths["state"]).result()
        out["forked"] = forked.model_id
        out["public_urls"] = sorted(rest.get_external_weights_urls(paths["external"]).result().urls)
        out["public_copy"] = rest.copy_weights(paths["external"], "p").result()
        out["delete_public"] = _error(
            lambda: rest.delete_checkpoint_from_tinker_path(paths["external"]).result()
        )
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "owner":
        owner()
    else:
        other(json.loads(sys.argv[2]))
