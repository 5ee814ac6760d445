"""Where ``ckpt export`` gets the facts about a base model: ``--base-config``, our catalog,
or the Hugging Face Hub (``config.json`` and ``*.safetensors.index.json`` only, never
weights). ``huggingface_hub`` is imported only here and only when the Hub is asked."""

from __future__ import annotations

from pathlib import Path

from logits_cli.api import peft_families as families
from logits_cli.errors import LogitsError, NotFoundError, UnavailableError, UsageError

HUB_TIMEOUT_S = 20.0
# The flag hints are the CLI's (cli/failures.py): these errors carry option="base_config".
BASE_CONFIG = "base_config"


def resolve_facts(base_model: str | None, base_config: Path | None) -> families.BaseModelFacts:
    if base_config is not None:
        return families.facts_from_path(base_model, base_config)
    if base_model is None:
        raise UsageError("the checkpoint does not name its base model", option="base_model")
    return families.catalog_facts(base_model) or facts_from_hub(base_model)


def facts_from_hub(name: str) -> families.BaseModelFacts:
    try:
        import huggingface_hub
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError:
        raise UsageError(
            f"{name} is not in the catalog and huggingface_hub is not installed "
            "(pip install 'logits-cli[hf]')",
            option=BASE_CONFIG,
        ) from None

    def fetch(filename: str) -> Path:
        return Path(
            huggingface_hub.hf_hub_download(
                name, filename, etag_timeout=HUB_TIMEOUT_S, local_files_only=False
            )
        )

    try:
        config_path = fetch("config.json")
        index: set[str] = set()
        try:
            index_path = fetch("model.safetensors.index.json")
            index = families.index_names(families.read_json_file(index_path, "weight index"))
        except LocalEntryNotFoundError:
            raise
        except EntryNotFoundError:
            pass  # one weight file: the config decides
    except LocalEntryNotFoundError:  # offline (HF_HUB_OFFLINE) and not in its cache
        raise UnavailableError(
            f"the Hugging Face Hub is offline and {name}'s config.json is not cached",
            option=BASE_CONFIG,
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise NotFoundError(
            f"the Hugging Face Hub has no readable model {name}", option=BASE_CONFIG
        ) from None
    except EntryNotFoundError:
        raise NotFoundError(f"{name} on the Hub has no config.json", option=BASE_CONFIG) from None
    except LogitsError:
        raise
    except Exception as exc:  # offline, timeouts, proxies: huggingface_hub's many errors
        raise UnavailableError(
            f"cannot fetch {name}'s config.json from the Hugging Face Hub ({type(exc).__name__})",
            option=BASE_CONFIG,
        ) from None
    config = families.read_json_file(config_path, "base model config")
    return families.facts_from_config(name, config, index or None, "huggingface.co")
