"""The ``shm_file`` weight-transfer backend's name and protocol version, shared by the trainer side
(:mod:`mo_align.vllm.client`) and the server side (:mod:`mo_align.vllm.plugin`, :mod:`mo_align.vllm.shm_engine`).
Imports nothing."""

from __future__ import annotations


__all__ = ["BACKEND", "PROTOCOL"]

BACKEND = "shm_file"
PROTOCOL = 1  # bumped when the update_info fields change; the trainer sends the one it speaks
