"""vLLM server mode (``use_vllm: true``, ``vllm_mode: server``): rollouts on a vLLM server in its own venv.

Trainer side (the training venv; imports TRL, never vLLM):

* :mod:`mo_align.vllm.client` -- :class:`~mo_align.vllm.client.ServerClient` (HTTP with bounded retries, the
  ``shm_file`` weight push in safetensors chunks), its errors and the ``MO_ALIGN_VLLM_SYNC*`` settings;
* :mod:`mo_align.vllm.generation` -- :class:`~mo_align.vllm.generation.ServerModeGeneration`, TRL's generation
  backend following the server's weight-transfer backend, and :func:`~mo_align.vllm.generation.server_mode`, which
  installs it while ``MOGRPOTrainer`` is built;
* :mod:`mo_align.vllm.trl_compat` -- every TRL private name the two modules above rely on, in one place.

Server side (``.venv-vllm``; loaded by vLLM through the ``vllm.general_plugins`` entry point):

* :mod:`mo_align.vllm.plugin` -- the entry point (:func:`~mo_align.vllm.plugin.register`), light to import;
* :mod:`mo_align.vllm.shm_engine` -- the ``shm_file`` weight-transfer engine itself.

This ``__init__`` imports nothing, so that vLLM's processes importing the plugin load neither TRL nor torch.
"""
