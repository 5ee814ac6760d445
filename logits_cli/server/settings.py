"""Server settings (docs/protocol.md §1.5). Plain dataclass: cheap to import."""

from __future__ import annotations

from dataclasses import dataclass

# Blob URLs issued by the embedded server use this reserved origin; the client fetches them
# through the same in-process transport (docs/protocol.md §1.4).
EMBEDDED_ORIGIN = "http://logits-embedded.invalid"


@dataclass(frozen=True)
class ServerSettings:
    uri_scheme: str = "logits"  # "tinker" for official-SDK clients (§3.5)
    public_url: str | None = None  # None: from the request's scheme and Host (§5.6.4)
    root_path: str = ""  # mount prefix, included in every generated URL (§1.2)
    auth: bool = True  # False in the embedded backend: every request acts as user "local"
    jwt_auth: bool = False
    jwt_ttl: int = 3600
    download_url_ttl: int = 900
    future_poll_hold: float = 10.0  # MUST stay below 40 s
    future_retention: int = 3600
    idempotency_retention: int = 86400
    inline_futures: bool = False  # embedded: run the job inside the submitting request
    future_workers: int = 2  # served mode: worker threads for futures
    signing_secret: bytes | None = None  # None: read or create <store root>/signing_secret
    max_rank: int = 256
    sweep_interval: float = 60.0  # served mode: seconds between TTL sweeps of the store
    # Served mode: seconds between looks for saves of dead server processes to take over.
    takeover_interval: float = 2.0
    # Which generation of downloads to serve (docs/protocol.md §11): "archive" (…/archive
    # only), "files" (external_weights exports only; …/archive answers 404) or "both".
    downloads: str = "both"
    # Extra base models from Hugging Face config.json files: "PATH" (named by the file's
    # _name_or_path) or "NAME=PATH"; added to the shipped catalog (store/catalog.py).
    model_configs: tuple[str, ...] = ()
    # Where blobs are kept: None, the store directory; "s3://BUCKET/PREFIX", that object
    # store, with downloads from its presigned URLs (store/object_store.py).
    blobs: str | None = None
    # /healthz answers 503 when the store's filesystem has less free space than this.
    min_free_bytes: int = 64 << 20

    @classmethod
    def embedded(cls) -> ServerSettings:
        return cls(auth=False, public_url=EMBEDDED_ORIGIN, inline_futures=True)
