"""The requests of ``LogitsClient`` about training runs: create, get, list, delete
(docs/protocol.md §5.3, §5.5). ``LogitsClient`` (``client.py``) inherits them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from logits_cli import models
from logits_cli.api.client_core import ClientCore, PendingCallback
from logits_cli.api.request_checks import last_page, scope
from logits_cli.errors import (
    MethodNotAllowedError,
    NotFoundError,
    UnsupportedError,
    UsageError,
)
from logits_cli.uri import validate_run_id


class RunRequests(ClientCore):
    """Training runs; every method maps failures to the classes of ``errors.py``."""

    async def create_run(
        self,
        base_model: str,
        *,
        rank: int = 32,
        seed: int | None = None,
        train_attn: bool = True,
        train_mlp: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        on_pending: PendingCallback | None = None,
        timeout: float | None = None,
    ) -> models.TrainingRun:
        """create_session + create_model future; returns the new run."""
        if rank <= 0:
            raise UsageError(f"LoRA rank must be positive, not {rank}")
        if not (train_attn or train_mlp or train_unembed):
            raise UsageError("at least one of attention, MLP or unembedding must be trained")
        session_id = await self._session()
        model_seq_id = self._next_model_seq_id
        self._next_model_seq_id += 1
        body = models.CreateModelRequest(
            session_id=session_id,
            model_seq_id=model_seq_id,
            base_model=base_model,
            user_metadata=user_metadata,
            lora_config=models.LoraConfig(
                rank=rank,
                seed=seed,
                train_attn=train_attn,
                train_mlp=train_mlp,
                train_unembed=train_unembed,
            ),
        )
        result = await self._submit(
            "create_model",
            body,
            models.CreateModelResult,
            what=f"creation of a {base_model} run",
            on_pending=on_pending,
            timeout=timeout,
        )
        return await self.get_run(result.model_id)

    async def get_run(self, run_id: str, *, access_scope: str = "owned") -> models.TrainingRun:
        response = await self._layer.request(
            "GET",
            f"training_runs/{validate_run_id(run_id)}",
            params={"access_scope": scope(access_scope)},
        )
        return self._layer.parse(response, models.TrainingRun)

    async def iter_runs(
        self, *, access_scope: str = "owned", page_size: int = 100
    ) -> AsyncIterator[models.TrainingRun]:
        """Every run, following the cursor (§5.5)."""
        viewer_scope = scope(access_scope)
        offset = 0
        while True:
            response = await self._layer.request(
                "GET",
                "training_runs",
                params={"limit": page_size, "offset": offset, "access_scope": viewer_scope},
            )
            page = self._layer.parse(response, models.TrainingRunsResponse)
            for run in page.training_runs:
                yield run
            offset += len(page.training_runs)
            if last_page(len(page.training_runs), offset, page.cursor, page_size):
                return

    async def get_info(self, run_id: str) -> models.GetInfoResponse:
        body = models.GetInfoRequest(model_id=validate_run_id(run_id))
        response = await self._layer.request("POST", "get_info", json=body.model_dump())
        return self._layer.parse(response, models.GetInfoResponse)

    async def delete_run(self, run_id: str, *, with_checkpoints: bool = False) -> None:
        """Delete an owned run (with its checkpoints when ``with_checkpoints``): our server's
        extension ``DELETE training_runs/{id}`` (docs/protocol.md §5.5). The service has no
        such route and answers 404 or 405; a 404 is told from a missing run by asking for
        the run again: UnsupportedError (exit 10) if it is still there."""
        path = f"training_runs/{validate_run_id(run_id)}"
        params = {"with_checkpoints": "true" if with_checkpoints else "false"}
        try:
            await self._layer.request("DELETE", path, params=params)
        except MethodNotAllowedError:
            raise _no_run_deletion() from None
        except NotFoundError:
            await self.get_run(run_id)  # NotFoundError again: the run is not (or no longer) there
            raise _no_run_deletion() from None


def _no_run_deletion() -> UnsupportedError:
    return UnsupportedError(
        "this deployment cannot delete training runs (no DELETE /api/v1/training_runs/RUN)",
        hint="only a logits server offers it; the service keeps runs (their checkpoints can"
        " be deleted one by one)",
        option="delete_run",
    )
