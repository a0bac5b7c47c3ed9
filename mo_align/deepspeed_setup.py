"""Before a DeepSpeed run: no just-in-time build that training does not need, no silent wait on a dead build's lock.

DeepSpeed's CPU accelerator compiles its shared-memory communication op (``deepspeed_shm_comm``) with
``torch.utils.cpp_extension.load`` when its torch backend starts (``deepspeed.comm.torch.build_shm_op``). Training
does not use it: the op serves ``inference_all_reduce`` (tensor-parallel inference) only, ZeRO's collectives go
through ``torch.distributed`` (gloo). The build costs 30-70 s, and it runs under torch's ``FileBaton``: a ``lock``
file in the extension's build directory, created with ``O_CREAT | O_EXCL``, kept open by the building process and
removed when it is done, while every other process sleeps until the file is gone. A build killed in between (Ctrl-C,
a timeout) leaves the file behind, and every later process loading that extension waits forever without a word.

* :func:`skip_cpu_comm_op` marks the op not compatible in this process on the CPU accelerator, DeepSpeed's own
  fallback (``build_shm_op`` returns None, the backend uses ``torch.distributed``), unless it was built at install
  time (``DS_BUILD_SHM_COMM=1 pip install deepspeed``), which loads without a build or a lock.
* :func:`check_extension_locks` refuses to start while a stale lock lies under the extensions root
  (``$TORCH_EXTENSIONS_DIR``, else torch's ``~/.cache/torch_extensions``): a ``lock`` file older than
  ``LOCK_MIN_AGE_S`` that no process of this machine has open. The rule rests on the baton's holder keeping the
  descriptor of ``os.open`` for the whole build (``/proc/<pid>/fd`` links to the file); the age only covers the
  instant between ``release``'s close and remove. Processes of other users are not inspected (the root is per user);
  one of ours that cannot be inspected makes every lock count as held. Without ``/proc`` nothing is reported.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path


__all__ = [
    "LOCK_MIN_AGE_S",
    "SHM_OP",
    "ExtensionLockError",
    "check_extension_locks",
    "deepspeed_requested",
    "extensions_root",
    "prepare_deepspeed",
    "skip_cpu_comm_op",
    "stale_locks",
]

SHM_OP = "deepspeed_shm_comm"
LOCK_MIN_AGE_S = 5.0  # a lock younger than this may be between FileBaton.release's close and remove
_MAX_DEPTH = 3  # <root>/<py311_cpu>/<extension>/lock under torch's default root, <root>/<extension>/lock otherwise


class ExtensionLockError(RuntimeError):
    """A torch extension build lock that no process holds: every process loading that extension would wait on it."""


def deepspeed_requested(deepspeed_config: object) -> bool:
    """Whether this process will run DeepSpeed: a ``deepspeed`` training argument, or ``accelerate launch`` with a
    DeepSpeed config (``ACCELERATE_USE_DEEPSPEED``)."""
    flag = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").strip().lower()
    return bool(deepspeed_config) or flag in ("1", "true", "yes", "on")


def extensions_root() -> Path:
    """Where ``torch.utils.cpp_extension`` builds: ``$TORCH_EXTENSIONS_DIR``, else its per-user default."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    # lazy: torch loads only when the build root is asked for; mo-align train's launcher imports this module
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def _open_files() -> set[str] | None:
    """Real paths of the files this user's processes have open; None when one of them cannot be inspected or there
    is no ``/proc``."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    uid, paths = os.getuid(), set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue  # another user's process: the extensions root is per user
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except FileNotFoundError:
            continue  # exited meanwhile
        except PermissionError:
            return None
        for fd in fds:
            try:
                paths.add(os.readlink(f"/proc/{entry.name}/fd/{fd}"))
            except OSError:
                continue  # closed meanwhile
    return paths


def stale_locks(root: Path | None = None, min_age_s: float = LOCK_MIN_AGE_S) -> list[Path]:
    """``lock`` files under ``root`` (default :func:`extensions_root`) older than ``min_age_s`` that no process has
    open (see the module docstring for the rule)."""
    root = extensions_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    now, old = time.time(), []
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).relative_to(root).parts) >= _MAX_DEPTH:
            dirnames.clear()
        if "lock" in filenames:
            path = Path(dirpath, "lock")
            try:
                if now - path.stat().st_mtime >= min_age_s:
                    old.append(path)
            except FileNotFoundError:
                continue  # released meanwhile
    if not old:
        return []
    held = _open_files()
    if held is None:
        return []
    return sorted(p for p in old if os.path.realpath(p) not in held and p.exists())


def check_extension_locks(root: Path | None = None) -> None:
    """Raise :class:`ExtensionLockError` (one line naming the file and how to remove it) for a stale lock."""
    root = extensions_root() if root is None else Path(root)
    stale = stale_locks(root)
    if not stale:
        return
    more = f" ({len(stale) - 1} more under {root})" if len(stale) > 1 else ""
    raise ExtensionLockError(
        "stale torch extension build lock: no process holds it (a killed build left it) and DeepSpeed would wait on "
        f"it forever; remove it: rm {stale[0]}{more}"
    )


def skip_cpu_comm_op() -> bool:
    """On DeepSpeed's CPU accelerator, keep this process from building ``deepspeed_shm_comm`` (see the module
    docstring); True when the op was marked not compatible."""
    from deepspeed.accelerator import get_accelerator  # optional extra: deepspeed

    if get_accelerator().device_name() != "cpu":
        return False
    from deepspeed.git_version_info import installed_ops  # optional extra: deepspeed

    if installed_ops.get(SHM_OP, False):
        return False  # built ahead: it loads without a build
    import deepspeed.ops  # optional extra: deepspeed

    deepspeed.ops.__compatible_ops__[SHM_OP] = False
    return True


def prepare_deepspeed() -> None:
    """Everything above, for a process about to run DeepSpeed: the lock check first (one line), then the op."""
    check_extension_locks()
    if importlib.util.find_spec("deepspeed") is not None:  # else the run stops naming the missing extra
        skip_cpu_comm_op()
