"""Drives the official tinker SDK against a logits server; prints one JSON object.

Runs in the SDK's own interpreter (not ours): ``python sdk_driver.py`` with TINKER_BASE_URL and
TINKER_API_KEY set. Only the SDK and the standard library are imported.
"""

import json
import os
import urllib.request

import tinker


def main() -> None:
    base_url = os.environ["TINKER_BASE_URL"]
    service = tinker.ServiceClient(base_url=base_url, api_key=os.environ["TINKER_API_KEY"])
    out: dict = {}
    out["capabilities"] = [m.model_name for m in service.get_server_capabilities().supported_models]

    training = service.create_lora_training_client(base_model="logits/tiny", rank=4, seed=1)
    out["model_id"] = training.model_id
    out["info_model_name"] = training.get_info().model_data.model_name
    out["state_path"] = training.save_state("sdk-state").result().path
    out["sampler_path"] = training.save_weights_for_sampler("sdk-sampler").result().path
    out["load_path"] = training.load_state(out["state_path"]).result().path
    out["load_optimizer_path"] = training.load_state_with_optimizer(out["state_path"]).result().path

    try:
        training.save_state("sdk-state").result()
        out["duplicate_save"] = "succeeded"
    except Exception as exc:
        out["duplicate_save"] = type(exc).__name__ + ": " + str(exc)

    resumed = service.create_training_client_from_state(out["state_path"])
    out["resumed_model_id"] = resumed.model_id

    rest = service.create_rest_client()
    runs = rest.list_training_runs(limit=100).result()
    out["runs"] = sorted(r.training_run_id for r in runs.training_runs)
    out["runs_total"] = runs.cursor.total_count
    run = rest.get_training_run(out["model_id"]).result()
    out["run"] = {
        "base_model": run.base_model,
        "lora_rank": run.lora_rank,
        "owner": run.model_owner,
        "last_checkpoint": run.last_checkpoint.tinker_path if run.last_checkpoint else None,
    }
    listed = rest.list_checkpoints(out["model_id"]).result()
    out["checkpoints"] = sorted(c.tinker_path for c in listed.checkpoints)
    user_listed = rest.list_user_checkpoints(limit=1000).result()
    out["user_checkpoints_total"] = user_listed.cursor.total_count
    out["weights_info"] = (
        rest.get_weights_info_by_tinker_path(out["state_path"]).result().model_dump()
    )

    archive = rest.get_checkpoint_archive_url_from_tinker_path(out["state_path"]).result()
    with urllib.request.urlopen(archive.url) as response:
        out["archive"] = {
            "status": response.status,
            "etag": response.headers["ETag"],
            "size": len(response.read()),
        }

    rest.publish_checkpoint_from_tinker_path(out["sampler_path"]).result()
    out["public_after_publish"] = [
        c.public
        for c in rest.list_checkpoints(out["model_id"]).result().checkpoints
        if c.tinker_path == out["sampler_path"]
    ]
    rest.unpublish_checkpoint_from_tinker_path(out["sampler_path"]).result()
    rest.set_checkpoint_ttl_from_tinker_path(out["sampler_path"], 86400).result()
    rest.set_checkpoint_ttl_from_tinker_path(out["state_path"], 3600).result()
    rest.set_checkpoint_ttl_from_tinker_path(out["state_path"], None).result()
    rest.delete_checkpoint_from_tinker_path(out["sampler_path"]).result()
    out["checkpoints_after_delete"] = sorted(
        c.tinker_path for c in rest.list_checkpoints(out["model_id"]).result().checkpoints
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
