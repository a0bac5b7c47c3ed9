"""TRL's generation backend in vLLM server mode, made to follow the server's weight-transfer backend.

TRL 1.16's server mode (``use_vllm: true``, ``vllm_mode: server``) asks for vLLM in the *training* venv and
synchronises weights over NCCL, i.e. CUDA only: on a CPU machine ``GRPOTrainer`` cannot even be constructed.
mo_align keeps vLLM in its own venv (``make vllm-env``) and swaps TRL's generation backend for
:class:`ServerModeGeneration` while ``MOGRPOTrainer`` is built (:func:`server_mode`). It follows the weight-transfer
backend that the server reports (``/server_info``):

* ``shm_file`` (what ``make vllm-server`` starts on a machine without CUDA; server half in
  :mod:`mo_align.vllm.plugin`): mo_align's :class:`~mo_align.vllm.client.ServerClient` writes the weights to files
  the server reads. Works with or without CUDA; needs a shared filesystem.
* ``nccl`` (what ``make vllm-server`` starts on a GPU machine): TRL's own client and NCCL broadcast, unchanged.
  TRL imports vLLM for it, so this path needs vLLM importable in the training environment and CUDA.

Failures never leave a run training against a stale policy: a sync that cannot complete, a server that stays
unreachable for ``vllm_server_timeout`` seconds or an error status raises
:class:`~mo_align.vllm.client.VLLMServerError` (naming the server's host:port) on every process at once, so the
trainer can write a checkpoint before it stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import broadcast_object_list
from trl.import_utils import is_vllm_available

from mo_align.vllm.backend import BACKEND as SHM_FILE
from mo_align.vllm.client import ServerClient, VLLMServerError, sync_mode
from mo_align.vllm.trl_compat import TRLGeneration, generation_class_swapped


if TYPE_CHECKING:
    from trl import GRPOTrainer


__all__ = ["ServerModeGeneration", "describe_sync", "server_mode"]

logger = logging.getLogger("mo_align.vllm")


class ServerModeGeneration(TRLGeneration):
    """TRL's ``VLLMGeneration`` whose server mode uses :class:`ServerClient` when the server speaks ``shm_file``.

    Colocate mode and NCCL servers go to TRL's code unchanged. Server failures are agreed on by all processes
    (one small broadcast per generation and per sync) and raised everywhere as :class:`VLLMServerError`.
    """

    def init_backend(self) -> None:
        if self.mode != "server":
            return super().init_backend()
        accelerator = self.accelerator
        plan, message, error = "mo_align", None, None
        if accelerator.is_main_process:
            try:
                plan = self._connect()
            except Exception as exc:  # reported on every process, raised as it is on this one
                error, message = exc, str(exc)
        plan, message = self._agree((plan, message))
        if message is not None:
            raise error if error is not None else VLLMServerError(message)
        if plan == "trl":
            return super().init_backend()  # TRL's client and NCCL rendezvous on the main process
        accelerator.wait_for_everyone()
        return None

    def _connect(self) -> str:
        """Main process: reach the server and pick the sync path; returns ``"trl"`` (NCCL) or ``"mo_align"``."""
        mode = sync_mode()
        base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
        client = ServerClient(base_url, connection_timeout=self.server_timeout, sync=mode)
        backend = client.server_backend() if mode != "off" else None
        if mode == "nccl" or (mode == "auto" and backend not in (None, SHM_FILE)):
            problems = []
            if not torch.cuda.is_available():
                problems.append("no CUDA device on the trainer")
            if not is_vllm_available():
                problems.append("vLLM is not importable in the training environment (TRL's NCCL client needs it)")
            if problems:
                raise VLLMServerError(
                    f"the vLLM server at {client.address} syncs weights over {backend or 'nccl'!r}, which this "
                    f"trainer cannot drive: {'; '.join(problems)}. Restart the server with SYNC={SHM_FILE} "
                    f"(`make vllm-server SYNC={SHM_FILE}`; trainer and server must share a filesystem), or install "
                    "vLLM next to the trainer for TRL's NCCL sync"
                )
            client.session.close()
            return "trl"
        client.init_communicator(self.accelerator.device)
        self.vllm_client = client
        logger.info(
            "vLLM server mode: %s at %s (weight sync: %s)",
            client.model,
            client.address,
            "OFF" if mode == "off" else f"{SHM_FILE} via {client.sync_dir}",
        )
        return "mo_align"

    def _agree(self, value: Any) -> Any:
        """``value`` from the main process, on every process."""
        if self.accelerator.num_processes == 1:
            return value
        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def sync_weights(self) -> None:
        if self.mode != "server":
            return super().sync_weights()
        error: BaseException | None = None
        try:
            super().sync_weights()
        except VLLMServerError as exc:
            if self.accelerator.num_processes == 1:
                raise
            error = exc
        message = self._agree(None if error is None else str(error))
        if message is not None:
            raise error if error is not None else VLLMServerError(message)
        return None

    def generate(self, prompts, images, num_generations, profiler=None):
        result = super().generate(prompts, images, num_generations, profiler)
        if self.mode != "server":
            return result
        client = getattr(self, "vllm_client", None)
        error = getattr(client, "generate_error", None)
        if client is not None and error is not None:
            client.generate_error = None
        message = self._agree(None if error is None else str(error))
        if message is not None:
            raise error if error is not None else VLLMServerError(message)
        return result


@contextlib.contextmanager
def server_mode(args: Any) -> Iterator[None]:
    """While a trainer is built: make TRL's GRPOTrainer use :class:`ServerModeGeneration` in vLLM server mode.

    Nothing changes unless ``args.use_vllm`` and ``args.vllm_mode == "server"`` (the swap itself:
    :func:`mo_align.vllm.trl_compat.generation_class_swapped`).
    """
    if not (getattr(args, "use_vllm", False) and getattr(args, "vllm_mode", None) == "server"):
        yield
        return
    with generation_class_swapped(ServerModeGeneration):
        yield


def describe_sync(trainer: GRPOTrainer) -> dict[str, Any]:
    """What the trainer's vLLM server sync did last (for logs and tests); empty outside server mode."""
    client = getattr(getattr(trainer, "vllm_generation", None), "vllm_client", None)
    if not isinstance(client, ServerClient):
        return {}
    return {
        "address": client.address,
        "sync": client.sync,
        "syncs": client.sync_count,
        "weight_version": client.weight_version,
        "last_sync_seconds": client.last_sync_seconds,
        "last_sync_bytes": client.last_sync_bytes,
    }
