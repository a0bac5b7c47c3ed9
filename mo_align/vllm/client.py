"""Trainer side of vLLM server mode: :class:`ServerClient`, a TRL ``VLLMClient`` that needs no vLLM install.

It talks to the server over HTTP with bounded retries and pushes weights through the server's ``shm_file``
backend (server half: :mod:`mo_align.vllm.plugin`): TRL's own ``sync_weights`` walks the parameters (ZeRO-3
gathers, PEFT merges) and hands them to :meth:`ServerClient.update_named_params`, which writes them in safetensors
chunks to a directory the server also sees (``MO_ALIGN_VLLM_SYNC_DIR``, default ``/dev/shm``) inside the
``/start_weight_update`` -> ``/update_weights`` -> ``/finish_weight_update`` bracket, then checks that the server
reports the new ``weight_version``. Works with or without CUDA; needs a shared filesystem.

Environment: ``MO_ALIGN_VLLM_SYNC`` = ``auto`` (default: follow the server), ``shm_file``, ``nccl`` or ``off``
(**tests only**: never push weights, so the server keeps generating from its initial weights; warned loudly).
``MO_ALIGN_VLLM_SYNC_CHUNK_MB`` (default 1024) bounds the extra host memory of one chunk.

Errors: a server that stays unreachable for ``vllm_server_timeout`` seconds raises :class:`VLLMServerUnreachable`,
any other failure :class:`VLLMServerError`, both naming the server's host:port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlparse

import requests
import torch
from safetensors.torch import save_file

from mo_align.vllm.backend import BACKEND as SHM_FILE
from mo_align.vllm.backend import PROTOCOL
from mo_align.vllm.trl_compat import TRLClient


__all__ = [
    "SYNC_MODES",
    "ServerClient",
    "VLLMServerError",
    "VLLMServerUnreachable",
    "sync_mode",
]

logger = logging.getLogger("mo_align.vllm")

SYNC_ENV = "MO_ALIGN_VLLM_SYNC"
SYNC_DIR_ENV = "MO_ALIGN_VLLM_SYNC_DIR"
CHUNK_ENV = "MO_ALIGN_VLLM_SYNC_CHUNK_MB"
SYNC_MODES = ("auto", SHM_FILE, "nccl", "off")
_STALE_WARNING = (
    "vLLM weight sync is OFF (MO_ALIGN_VLLM_SYNC=off): the server keeps generating from its initial weights, so "
    "training is off-policy. This setting exists for tests only."
)


class VLLMServerError(RuntimeError):
    """The vLLM server could not serve a request (generation or weight sync)."""


class VLLMServerUnreachable(VLLMServerError, ConnectionError):
    """The vLLM server did not answer within ``vllm_server_timeout``."""


def sync_mode() -> str:
    """The weight-sync mode asked for through ``MO_ALIGN_VLLM_SYNC`` (default ``auto``)."""
    mode = os.environ.get(SYNC_ENV, "auto").strip().lower() or "auto"
    if mode not in SYNC_MODES:
        raise ValueError(f"{SYNC_ENV}={mode!r} is not one of {', '.join(SYNC_MODES)}")
    return mode


def _default_sync_dir() -> str:
    chosen = os.environ.get(SYNC_DIR_ENV)
    if chosen:
        return chosen
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


# ---- client ----------------------------------------------------------------------------------------------------
class ServerClient(TRLClient):
    """TRL's ``VLLMClient`` (generation, server info, prefix cache) without its vLLM import and NCCL rendezvous.

    Every request is retried on connection failures until ``connection_timeout`` seconds have passed, then raises
    :class:`VLLMServerUnreachable` naming host:port; any other failure raises :class:`VLLMServerError`. Weight
    updates go through the server's ``shm_file`` backend (see the module docstring).

    Args:
        base_url: ``http://host:port`` of the server.
        connection_timeout: seconds to wait for the server, at start-up and for each later request.
        sync: ``auto``/``shm_file`` (push weights through files) or ``off`` (push nothing; tests only).
        sync_dir: directory for the weight files, shared with the server (default ``MO_ALIGN_VLLM_SYNC_DIR`` or
            ``/dev/shm``).
        chunk_mb: largest chunk written before it is sent (default ``MO_ALIGN_VLLM_SYNC_CHUNK_MB`` or 1024).
    """

    def __init__(
        self,
        base_url: str,
        connection_timeout: float = 240.0,
        sync: str = "auto",
        sync_dir: str | None = None,
        chunk_mb: float | None = None,
    ) -> None:
        parsed = urlparse(base_url if "://" in base_url else f"http://{base_url}")
        session = requests.Session()
        # Retries are ours (bounded by connection_timeout): the adapter must not add its own.
        adapter = requests.adapters.HTTPAdapter(max_retries=0, pool_maxsize=64)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        url = f"{parsed.scheme}://{parsed.netloc}{parsed.path}".rstrip("/")
        self.adopt_connection(url, parsed.hostname, parsed.port, session)
        self.address = parsed.netloc
        self.timeout = float(connection_timeout)
        self.sync = sync
        self.sync_dir = sync_dir or _default_sync_dir()
        self.chunk_bytes = int(float(chunk_mb if chunk_mb is not None else os.environ.get(CHUNK_ENV, 1024)) * 2**20)
        self.weight_version: str | None = None  # what the server reported after our last update
        self.sync_count = 0
        self.last_sync_seconds: float | None = None
        self.last_sync_bytes = 0
        self.generate_error: BaseException | None = None  # see generate()
        self._version_to_finish: str | None = None
        self.check_server(self.timeout)
        self.model = self.get_json(f"{self.base_url}/v1/models")["data"][0]["id"]

    # -- transport ---------------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                # connect timeout only: a generation may legitimately take minutes, a dead address should not
                kwargs.setdefault("timeout", (min(10.0, max(1.0, self.timeout)), None))
                return self.session.request(method, url, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    path = urlparse(url).path
                    raise VLLMServerUnreachable(
                        f"the vLLM server at {self.address} did not answer {method} {path} for "
                        f"{self.timeout:g} s (vllm_server_timeout): {type(exc).__name__}. Is it still running?"
                    ) from exc
                time.sleep(min(1.0, remaining))

    def _checked(self, response: requests.Response) -> dict:
        if response.status_code != 200:
            path = urlparse(response.url).path
            raise VLLMServerError(
                f"the vLLM server at {self.address} answered {path} with HTTP {response.status_code}: "
                f"{response.text[:1000]}"
            )
        return response.json()

    def get_json(self, url: str, **kwargs: Any) -> dict:
        return self._checked(self._request("GET", url, **kwargs))

    def post_json(self, url: str, **kwargs: Any) -> dict:
        return self._checked(self._request("POST", url, **kwargs))

    def check_server(self, total_timeout: float = 0.0, retry_interval: float = 1.0) -> None:
        """Wait until ``/health`` answers 200, at most ``total_timeout`` seconds."""
        deadline = time.monotonic() + total_timeout
        last = "no answer"
        while True:
            try:
                response = self.session.get(f"{self.base_url}/health", timeout=max(1.0, min(10.0, total_timeout)))
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = type(exc).__name__
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VLLMServerUnreachable(
                    f"cannot reach the vLLM server at {self.address} ({self.base_url}/health: {last}) within "
                    f"vllm_server_timeout={total_timeout:g} s. Start it with `make vllm-server MODEL=<model> "
                    f"HOST=<host> PORT=<port>`, or point vllm_server_host/vllm_server_port (or vllm_server_base_url) "
                    "at a running one."
                )
            time.sleep(min(retry_interval, remaining))

    def get_server_info(self) -> dict:
        response = self._request("GET", f"{self.base_url}/server_info", params={"config_format": "json"})
        if response.status_code == 404:
            raise VLLMServerError(
                f"the vLLM server at {self.address} does not expose its development endpoints (weight sync needs "
                "them): restart it with VLLM_SERVER_DEV_MODE=1 (`make vllm-server` does)"
            )
        return self._checked(response)["vllm_config"]

    def server_backend(self) -> str | None:
        """The server's weight-transfer backend (``shm_file``, ``nccl``, ...) or None when it has none."""
        config = self.get_server_info().get("weight_transfer_config")
        return config.get("backend") if isinstance(config, dict) else None

    def reset_prefix_cache(self) -> None:
        self.post_json(f"{self.base_url}/reset_prefix_cache")

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, prompts: list, *args: Any, **kwargs: Any) -> dict:
        """TRL's ``generate``; a server failure is kept in ``generate_error`` and a well-formed empty result returned.

        The caller (``ServerModeGeneration.generate``) raises it on every process after TRL's broadcast of the
        results, which the other processes are blocked in.
        """
        try:
            if self.weight_version is not None:  # weights we pushed: are they still the ones served?
                served = self.get_json(f"{self.base_url}/weight_info").get("weight_version")
                if served != self.weight_version:
                    raise VLLMServerError(
                        f"the vLLM server at {self.address} serves weight_version {served!r}, not the "
                        f"{self.weight_version!r} this trainer pushed last (was it restarted?): its completions would "
                        "come from another policy"
                    )
            return super().generate(prompts, *args, **kwargs)
        except VLLMServerError as exc:
            self.generate_error = exc
            n = int(kwargs.get("n", args[1] if len(args) > 1 else 1))
            empty = [[] for _ in range(n * len(prompts))]
            return {
                "prompt_ids": [list(p) for p in prompts],
                "completion_ids": empty,
                "logprobs": empty,
                "logprob_token_ids": empty,
            }

    # -- weight sync -------------------------------------------------------------------------------------------
    def init_communicator(self, device: Any = None) -> None:
        """Check that the server runs the ``shm_file`` backend and initialise it (no rendezvous, any device)."""
        if self.sync == "off":
            logger.warning(_STALE_WARNING)
            return
        backend = self.server_backend()
        if backend != SHM_FILE:
            found = "no weight-transfer engine" if backend is None else f"the {backend!r} weight-transfer backend"
            raise VLLMServerError(
                f"the vLLM server at {self.address} runs {found}; this trainer syncs weights through "
                f"'{SHM_FILE}'. Restart the server with `make vllm-server` (it picks {SHM_FILE} without CUDA; "
                f"SYNC={SHM_FILE} forces it)"
            )
        os.makedirs(self.sync_dir, exist_ok=True)
        self.post_json(f"{self.base_url}/init_weight_transfer_engine", json={"init_info": {"protocol": PROTOCOL}})

    def close_communicator(self) -> None:
        return None  # nothing to tear down

    def start_weight_update(self) -> None:
        try:
            self.post_json(f"{self.base_url}/start_weight_update", json={})
        except VLLMServerError as exc:
            if "already active" not in str(exc):
                raise
            # A trainer that died mid-update left the bracket open: close it (layers it did not reach keep their
            # weights) and start ours, which rewrites every layer.
            logger.warning("the vLLM server at %s was left mid weight update; closing that update", self.address)
            self.post_json(f"{self.base_url}/finish_weight_update", json={})
            self.post_json(f"{self.base_url}/start_weight_update", json={})

    def finish_weight_update(self) -> None:
        body = {} if self._version_to_finish is None else {"weight_version": self._version_to_finish}
        self.post_json(f"{self.base_url}/finish_weight_update", json=body)

    def update_named_params(
        self, metadata: list[tuple[str, str, list[int]]] | None, named_params: Iterable[tuple[str, torch.Tensor]]
    ) -> None:
        """Send every ``(name, tensor)`` to the server in safetensors chunks, then check the served version.

        The iterator is always consumed to the end, even after a failure: under ZeRO-3 each item is a collective
        gather that the other processes take part in.
        """
        if self.sync == "off":
            for _ in named_params:
                pass
            logger.warning(_STALE_WARNING)
            return
        start = time.perf_counter()
        bracket = not self.in_weight_update  # inside TRL's weight_update() the caller opens and closes it
        version = f"mo_align-{self.sync_count + 1}-{uuid.uuid4().hex[:8]}"
        error: BaseException | None = None
        sent = 0
        try:
            if bracket:
                self.start_weight_update()
        except Exception as exc:
            error = exc
        if error is not None:
            for _ in named_params:  # still take part in the collectives
                pass
        for chunk in _chunks(named_params, self.chunk_bytes):
            if error is None:
                try:
                    sent += self._send_chunk(chunk)
                except Exception as exc:
                    error = exc
        if bracket and not isinstance(error, VLLMServerUnreachable):
            self._version_to_finish = version if error is None else None
            try:
                self.finish_weight_update()  # also after a failure, so the server is not left mid-update
            except Exception as exc:
                error = error or exc
            finally:
                self._version_to_finish = None
        if error is not None:
            kind = type(error) if isinstance(error, VLLMServerError) else VLLMServerError
            raise kind(
                f"weight sync to the vLLM server at {self.address} (files in {self.sync_dir}) failed, so it cannot "
                f"follow the trained policy: {error}"
            ) from error
        self.sync_count += 1
        if bracket:
            served = self.get_json(f"{self.base_url}/weight_info").get("weight_version")
            if served != version:
                raise VLLMServerError(
                    f"the vLLM server at {self.address} reports weight_version {served!r} after the sync, expected "
                    f"{version!r}: the update did not take effect"
                )
            self.weight_version = served
        self.last_sync_seconds = time.perf_counter() - start
        self.last_sync_bytes = sent

    def _send_chunk(self, tensors: dict[str, torch.Tensor]) -> int:
        name = f"mo_align_weights_{os.getpid()}_{uuid.uuid4().hex[:12]}.safetensors"
        path = os.path.join(self.sync_dir, name)
        partial = path + ".partial"
        try:
            save_file(tensors, partial)
            os.replace(partial, path)  # the server never sees a half-written file
            self.post_json(
                f"{self.base_url}/update_weights", json={"update_info": {"path": path, "num_tensors": len(tensors)}}
            )
        finally:
            for leftover in (partial, path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        return sum(t.numel() * t.element_size() for t in tensors.values())


def _chunks(named_params: Iterable[tuple[str, torch.Tensor]], limit: int) -> Iterator[dict[str, torch.Tensor]]:
    """Group host copies of the tensors into dicts of at most ``limit`` bytes (at least one tensor each)."""
    chunk: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in named_params:
        # A copy: under ZeRO-3 the gathered storage is released as soon as the iterator moves on.
        host = tensor.detach().to("cpu", copy=True).contiguous()
        nbytes = host.numel() * host.element_size()
        if chunk and size + nbytes > limit:
            yield chunk
            chunk, size = {}, 0
        chunk[name] = host
        size += nbytes
    if chunk:
        yield chunk
