"""The ``shm_file`` weight-transfer engine, inside vLLM's processes (imported by :func:`mo_align.vllm.plugin.register`).

It receives checkpoint-format weights from a safetensors file and reloads them layer by layer with vLLM's
layerwise reload: ``start_weight_update`` initialises the reload, each ``update_weights`` streams one file into
``model.load_weights``, ``finish_weight_update`` finalises the reload and, on CPU, re-packs the embedding-type GEMMs
(see :func:`repack_embedding_gemms`). This module imports vLLM at import time: only vLLM's processes import it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from safetensors import safe_open
from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)

from mo_align.vllm.backend import PROTOCOL


__all__ = ["ShmFileWeightTransferEngine", "load_file_into", "repack_embedding_gemms"]

logger = logging.getLogger("mo_align.vllm.plugin")


@dataclass
class ShmFileInitInfo(WeightTransferInitInfo):
    protocol: int = PROTOCOL


@dataclass
class ShmFileUpdateInfo(WeightTransferUpdateInfo):
    path: str
    num_tensors: int | None = None  # what the trainer wrote; checked against the file


class ShmFileWeightTransferEngine(WeightTransferEngine[ShmFileInitInfo, ShmFileUpdateInfo]):
    """Receives checkpoint-format weights from a safetensors file and reloads them layer by layer."""

    init_info_cls = ShmFileInitInfo
    update_info_cls = ShmFileUpdateInfo
    supports_draft_weight_update = False

    def init_transfer_engine(self, init_info: ShmFileInitInfo) -> None:
        if init_info.protocol != PROTOCOL:
            raise ValueError(
                f"shm_file weight transfer: the trainer speaks protocol {init_info.protocol}, this server "
                f"{PROTOCOL}; install the same mo_align version in both venvs (make vllm-env)"
            )
        logger.info("shm_file weight transfer ready (protocol %d)", PROTOCOL)

    def start_weight_update(self) -> None:
        # optional extra: vllm; lazy: vLLM loads this plugin early in each process, its model executor only when used
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def receive_weights(self, update_info: ShmFileUpdateInfo) -> None:
        path = update_info.path
        if not path.endswith(".safetensors"):
            raise ValueError(f"shm_file weight transfer expects a .safetensors file, got {path!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"shm_file weight transfer: {path} does not exist on the vLLM server's host. The trainer and the "
                "server must share this directory (same machine, or a shared mount: set MO_ALIGN_VLLM_SYNC_DIR "
                "on the trainer to a directory both see)"
            )
        start = time.perf_counter()
        count = load_file_into(self.model, path)
        if update_info.num_tensors is not None and count != update_info.num_tensors:
            raise ValueError(
                f"shm_file weight transfer: read {count} tensors, the trainer wrote {update_info.num_tensors}"
            )
        logger.info("shm_file: loaded %d tensors from %s in %.3f s", count, path, time.perf_counter() - start)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload  # optional extra: vllm (lazy)

        finalize_layerwise_reload(self.model, self.model_config)
        repack_embedding_gemms(self.model)

    def shutdown(self) -> None:
        return None


def load_file_into(model: Any, path: str) -> int:
    """Stream the file's tensors into ``model.load_weights`` one at a time; returns how many were read."""
    count = 0

    def tensors():
        nonlocal count
        with safe_open(path, framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                count += 1
                yield name, handle.get_tensor(name)

    try:  # a partial checkpoint is fine here; vLLM's MTP completeness check would refuse it (optional extra: vllm, lazy)
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check
    except ImportError:  # pragma: no cover - older vLLM
        model.load_weights(tensors())
    else:
        with disable_mtp_completeness_check():
            model.load_weights(tensors())
    return count


def repack_embedding_gemms(model: Any) -> None:
    """On CPU, rebuild the packed GEMM of every unquantized embedding-type layer (a tied lm_head above all).

    The reload copies new values into the embedding's storage, which a tied lm_head shares, but the oneDNN handle
    that the CPU backend packed from it at load time still holds the old values.
    """
    # optional extra: vllm; lazy: vllm.platforms.current_platform must not be resolved while vLLM loads its plugins
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod) and getattr(module, "weight", None) is not None:
            method.process_weights_after_loading(module)
