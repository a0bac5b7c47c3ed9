"""Every TRL private name that mo_align's vLLM server mode touches, in one place (TRL 1.16.0, pinned exactly).

TRL's server-mode classes do their work through private methods: ``GRPOTrainer.__init__`` builds
``VLLMGeneration`` from its module's globals, ``VLLMGeneration._init_vllm`` creates the client, and
``VLLMClient.weight_update`` / ``generate`` / ``get_server_info`` call ``_get``, ``_post``,
``_start_weight_update`` and ``_finish_weight_update`` and set ``_updating_weights``. mo_align needs to replace a
few of them, so this module gives each one a public name:

* :class:`TRLGeneration` routes ``_init_vllm`` to :meth:`TRLGeneration.init_backend`;
* :class:`TRLClient` routes ``_get``/``_post``/``_start_weight_update``/``_finish_weight_update`` to
  ``get_json``/``post_json``/``start_weight_update``/``finish_weight_update``, exposes ``_updating_weights`` as
  :attr:`TRLClient.in_weight_update` and sets what ``VLLMClient.__init__`` would (without its vLLM import);
* :func:`generation_class_swapped` swaps ``VLLMGeneration`` in ``trl.trainer.grpo_trainer``'s namespace.

:data:`PRIVATE_NAMES` lists them for the contract test (``tests/test_vllm.py``), which also checks that no other
module of ``mo_align/vllm/`` spells any of them. The public ``VLLMGeneration`` attributes read elsewhere (``mode``,
``accelerator``, ``server_base_url``, ``server_host``, ``server_port``, ``server_timeout``, ``vllm_client``) and the
source lines of ``sync_weights`` that mo_align relies on are checked there too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import requests
from trl import GRPOTrainer
from trl.generation.vllm_client import VLLMClient
from trl.generation.vllm_generation import VLLMGeneration


__all__ = ["PRIVATE_NAMES", "TRLClient", "TRLGeneration", "generation_class_swapped"]

# (owner, name): an importable module or class, and the private name mo_align overrides, sets, reads or swaps.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("trl.trainer.grpo_trainer", "VLLMGeneration"),  # module global GRPOTrainer.__init__ builds; swapped
    ("trl.generation.vllm_generation.VLLMGeneration", "_init_vllm"),  # overridden
    ("trl.generation.vllm_client.VLLMClient", "_get"),  # overridden (TRL's requests go through mo_align's)
    ("trl.generation.vllm_client.VLLMClient", "_post"),  # overridden
    ("trl.generation.vllm_client.VLLMClient", "_start_weight_update"),  # overridden, called by weight_update()
    ("trl.generation.vllm_client.VLLMClient", "_finish_weight_update"),  # overridden, called by weight_update()
    ("trl.generation.vllm_client.VLLMClient", "_updating_weights"),  # instance attribute: set here, read
    ("trl.generation.vllm_client.VLLMClient", "__init__"),  # bypassed: its attributes are set by TRLClient
)


class TRLGeneration(VLLMGeneration):
    """TRL's ``VLLMGeneration`` whose private start-up hook is :meth:`init_backend`."""

    def _init_vllm(self) -> None:
        return self.init_backend()

    def init_backend(self) -> None:
        """Create the vLLM client (server mode) or engine (colocate mode); TRL's ``_init_vllm`` by default."""
        return VLLMGeneration._init_vllm(self)


class TRLClient(VLLMClient):
    """TRL's ``VLLMClient`` with public names for the private methods that TRL's own methods call.

    Subclasses do not call ``VLLMClient.__init__`` (it refuses to run without vLLM importable): they call
    :meth:`adopt_connection` instead, which sets every attribute TRL's methods read.
    """

    def adopt_connection(self, base_url: str, host: str | None, port: int | None, session: requests.Session) -> None:
        """Set what ``VLLMClient.__init__`` sets, with no NCCL group (``group_port``/``communicator`` None)."""
        self.base_url = base_url
        self.host = host
        self.server_port = port
        self.session = session
        self.group_port = None
        self.communicator = None
        self._updating_weights = False

    @property
    def in_weight_update(self) -> bool:
        """True inside TRL's ``weight_update()`` bracket (whose caller opens and closes the update)."""
        return self._updating_weights

    def _get(self, url: str, **kwargs: Any) -> dict:
        return self.get_json(url, **kwargs)

    def _post(self, url: str, **kwargs: Any) -> dict:
        return self.post_json(url, **kwargs)

    def _start_weight_update(self) -> None:
        self.start_weight_update()

    def _finish_weight_update(self) -> None:
        self.finish_weight_update()

    def get_json(self, url: str, **kwargs: Any) -> dict:
        """GET ``url`` and return its JSON body (every GET of TRL's client methods comes here)."""
        return VLLMClient._get(self, url, **kwargs)

    def post_json(self, url: str, **kwargs: Any) -> dict:
        """POST to ``url`` and return its JSON body (every POST of TRL's client methods comes here)."""
        return VLLMClient._post(self, url, **kwargs)

    def start_weight_update(self) -> None:
        """Open a weight update on the server (``/start_weight_update``)."""
        VLLMClient._start_weight_update(self)

    def finish_weight_update(self) -> None:
        """Close a weight update on the server (``/finish_weight_update``)."""
        VLLMClient._finish_weight_update(self)


@contextlib.contextmanager
def generation_class_swapped(replacement: type[VLLMGeneration]) -> Iterator[None]:
    """While inside: ``GRPOTrainer.__init__`` builds ``replacement`` instead of TRL's ``VLLMGeneration``.

    ``GRPOTrainer.__init__`` looks the class up in its module's namespace, so it is swapped there and restored on
    exit. Refuses when that global is no longer TRL's class (a TRL upgrade moved it).
    """
    module = sys.modules[GRPOTrainer.__module__]
    original = getattr(module, "VLLMGeneration", None)
    if original is None or not issubclass(replacement, original):
        raise RuntimeError(
            f"{module.__name__}.VLLMGeneration is not TRL's VLLMGeneration any more; mo_align's vLLM server mode "
            "needs updating for this TRL version"
        )
    module.VLLMGeneration = replacement
    try:
        yield
    finally:
        module.VLLMGeneration = original
