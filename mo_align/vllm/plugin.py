"""vLLM server plugin: the ``shm_file`` weight-transfer backend, so a CPU trainer can push its weights to vLLM.

vLLM's built-in weight-transfer backends (``nccl``, ``ipc``, ...) all need CUDA. This backend moves the weights
through safetensors files on a filesystem that the trainer and the server share (``/dev/shm`` on one host, or
a shared mount), driven by the standard RLHF endpoints that TRL already calls::

    POST /init_weight_transfer_engine {"init_info": {}}
    POST /start_weight_update                      -> initialise vLLM's layerwise reload
    POST /update_weights {"update_info": {"path": "/dev/shm/....safetensors"}}
                                                   -> stream the file into model.load_weights
    POST /finish_weight_update {"weight_version": "..."}
                                                   -> finalise the reload; on CPU re-pack the embedding / lm_head GEMMs

The re-pack matters on CPU: vLLM's CPU backend keeps a packed copy of every linear weight, and a tied ``lm_head``
is never "loaded" by the reload (it shares the embedding's storage), so its packed copy would go stale.

:func:`register` is the ``vllm.general_plugins`` entry point (``setup.cfg``), which vLLM loads in the API server,
the engine core and every worker. Start the server with ``--weight-transfer-config '{"backend": "shm_file"}'``
(``make vllm-server`` does it on a machine without CUDA). Importing this module is cheap: the engine
(:mod:`mo_align.vllm.shm_engine`, which imports vLLM, torch and safetensors) is imported only inside
:func:`register`, i.e. inside vLLM's processes; the package ``mo_align.vllm`` imports nothing at import time, and
the training venv never imports vLLM.
"""

from __future__ import annotations

from mo_align.vllm.backend import BACKEND, PROTOCOL


__all__ = ["BACKEND", "PROTOCOL", "register"]


def register() -> None:
    """Entry point (``vllm.general_plugins``): add the ``shm_file`` backend to vLLM's weight-transfer registry.

    vLLM may call it several times per process and in several processes; only the first call per process registers.
    """
    # optional extra: vllm; lazy on purpose too: this module is imported cheaply, the engine (vLLM, torch,
    # safetensors) only inside vLLM's processes, when vLLM calls register()
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    from mo_align.vllm.shm_engine import ShmFileWeightTransferEngine

    try:
        WeightTransferEngineFactory.register_engine(BACKEND, ShmFileWeightTransferEngine)
    except ValueError:  # already registered in this process
        return
