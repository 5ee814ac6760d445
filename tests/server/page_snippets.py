"""The service page's snippets ("Saving, Loading and Exporting Weights"), verbatim apart from
filling in the placeholders, run with SDK 0.24 as ``import tinker as logits``.

Prints one JSON object. Runs in the SDK's interpreter with TINKER_BASE_URL / TINKER_API_KEY.
"""

import json
import os
import sys
import tarfile
import tempfile
import urllib.request

import tinker as logits

out = {}
base_model = sys.argv[1]

# -- Saving for sampling
service_client = logits.ServiceClient()
training_client = service_client.create_lora_training_client(base_model=base_model, rank=32)

# Save a checkpoint that you can use for sampling
sampling_path = training_client.save_weights_for_sampler(name="0000").result().path

# Create a sampling client with that checkpoint
sampling_client = service_client.create_sampling_client(model_path=sampling_path)
out["sampling_path"] = sampling_path

# Shortcut
sampling_client = training_client.save_weights_and_get_sampling_client(name="0000")
out["shortcut"] = type(sampling_client).__name__

# -- Saving to resume training
resume_path = training_client.save_state(name="0010").result().path
training_client.load_state(resume_path)
out["resume_path"] = resume_path

# -- Downloading weights
rest_client = service_client.create_rest_client()
checkpoint_path = sampling_path
archive = rest_client.get_checkpoint_archive_url_from_tinker_path(checkpoint_path).result()
target = os.path.join(tempfile.mkdtemp(), "archive.tar")
urllib.request.urlretrieve(archive.url, target)
with tarfile.open(target) as tar:
    out["archive_members"] = tar.getnames()

# -- Publishing and sharing checkpoints
checkpoint_path = resume_path
rest_client.publish_checkpoint_from_tinker_path(checkpoint_path).result()
rest_client.unpublish_checkpoint_from_tinker_path(checkpoint_path).result()
training_client = service_client.create_training_client_from_state(checkpoint_path)
out["from_state"] = training_client.model_id
print(json.dumps(out))
