"""Checkpoints are complete and intact, or ignored: a manifest written last marks a finished checkpoint.

The trainer's checkpoint hook (``mo_align.trainer.state.save_checkpoint``) removes any old marker from the folder,
lets transformers write the checkpoint (model, optimizer, scheduler, RNG states, trainer state), adds
``mo_state.pt``, waits for every process, and only then writes ``mo_complete.json``: the size and SHA-256 of every
file of the folder. Older checkpoints are rotated away (``save_total_limit``) only after that, so a run killed
mid-write still has its previous complete checkpoint.

On resume, :func:`last_complete_checkpoint` takes the newest checkpoint whose manifest matches the folder (each file
present with its recorded size, every ``*.safetensors`` header readable, every file with its recorded SHA-256) and
says which ones it skipped and why; :func:`check_resumable` refuses, naming the file, a checkpoint that lacks
anything an exact resume needs (``scheduler.pt``, ``rng_state.pth``, ``mo_state.pt``, ...) or whose files do not
match their manifest. transformers alone resumed a checkpoint without ``scheduler.pt`` or ``rng_state.pth`` with
rc 0 to a different result, picked the newest checkpoint even when it was half written, and loaded a same-size
corrupted ``model.safetensors`` (the run then died on NaN probabilities). A checkpoint is hashed once per process
(a folder whose files have not changed since is not hashed again).

A write that fails for lack of space (:func:`disk_full_guard`) is reported as :class:`DiskFullError`, one line
naming the directory, instead of torch's ``unexpected pos`` / ``basic_ios::clear`` stack; the half-written
checkpoint has no marker and is skipped on resume.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from safetensors import safe_open

from mo_align.runs.files import MO_STATE_FILE, TRAINER_STATE_FILE


logger = logging.getLogger("mo_align")

MARKER = "mo_complete.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _files(folder: str) -> dict[str, int]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel != MARKER and not rel.endswith(".tmp"):
                out[rel] = os.path.getsize(path)
    return out


def unmark(folder: str) -> None:
    """Remove the marker (a checkpoint being rewritten is incomplete until it is marked again)."""
    if os.path.exists(os.path.join(folder, MARKER)):
        os.remove(os.path.join(folder, MARKER))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _digests(folder: str, rels: list[str]) -> dict[str, str]:
    """SHA-256 of each file (a few threads: hashlib releases the GIL, sharded checkpoints have many files)."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(rels)))) as pool:
        return dict(zip(rels, pool.map(lambda rel: _sha256(os.path.join(folder, rel)), rels), strict=True))


def mark_complete(folder: str) -> None:
    """Write the manifest (every file, its size and SHA-256) atomically, as the last file of the checkpoint."""
    files = _files(folder)
    manifest = {"version": 2, "files": files, "sha256": _digests(folder, sorted(files))}
    path = os.path.join(folder, MARKER)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


_verified: dict[str, tuple] = {}  # folder -> the stat of its files when its checksums last matched


def _signature(folder: str, rels: list[str]) -> tuple:
    stats = [os.stat(os.path.join(folder, rel)) for rel in [*rels, MARKER]]
    return tuple((rel, st.st_size, st.st_mtime_ns, st.st_ino) for rel, st in zip([*rels, MARKER], stats, strict=True))


def safetensors_problem(path: str) -> str | None:
    """Why ``path`` is not a readable safetensors file (header length, JSON, tensor offsets), or ``None``; reads the
    header only."""
    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except Exception as exc:  # SafetensorError (bad header / offsets), OSError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return f"its safetensors header is unreadable ({first})"
    return None


def incomplete_reason(folder: str, verify: bool = True) -> str | None:
    """Why ``folder`` is not a complete, intact checkpoint (``None`` when it is). ``verify=False`` checks the marker
    and the sizes only (no safetensors header, no checksum)."""
    path = os.path.join(folder, MARKER)
    if not os.path.exists(path):
        return f"no {MARKER} (killed while it was written, or written before mo_align marked checkpoints)"
    try:
        with open(path) as f:
            manifest = json.load(f)
        files, digests = manifest["files"], manifest.get("sha256") or {}  # version 1: sizes only
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{MARKER} is unreadable ({type(exc).__name__})"
    for rel, size in sorted(files.items()):
        file = os.path.join(folder, rel)
        if not os.path.exists(file):
            return f"{file} is missing"
        if os.path.getsize(file) != size:
            return f"{file} is truncated or changed ({os.path.getsize(file)} bytes, {size} when saved)"
    if not verify:
        return None
    signature = _signature(folder, sorted(files))
    if _verified.get(os.path.realpath(folder)) == signature:
        return None
    for rel in sorted(r for r in files if r.endswith(".safetensors")):
        problem = safetensors_problem(os.path.join(folder, rel))
        if problem is not None:
            return f"{os.path.join(folder, rel)} is corrupt: {problem}"
    actual = _digests(folder, sorted(r for r in files if r in digests))
    for rel, digest in sorted(actual.items()):
        if digest != digests[rel]:
            return (
                f"{os.path.join(folder, rel)} is corrupt: its SHA-256 differs from the one recorded when it was saved"
            )
    _verified[os.path.realpath(folder)] = signature
    return None


def skip_message(folder: str, reason: str) -> str:
    """The one line logged for a checkpoint that resume passes over."""
    kind = "corrupt" if " is corrupt: " in reason else "incomplete"
    return f"skipping {kind} checkpoint {folder}: {reason}"


def last_complete_checkpoint(output_dir: str, verify: bool = True) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete ``checkpoint-N`` of ``output_dir`` and the newer ones skipped, with the reason
    (``verify``: see :func:`incomplete_reason`)."""
    if not os.path.isdir(output_dir):
        return None, []
    steps = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(output_dir)
        if (m := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    skipped = []
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        reason = incomplete_reason(folder, verify)
        if reason is None:
            return folder, skipped
        skipped.append((folder, reason))
    return None, skipped


def required_files(world_size: int, process_index: int, sharded_optimizer: bool, save_only_model: bool) -> list[str]:
    """Files an exact resume reads, beside the model weights (which transformers checks itself)."""
    files = [TRAINER_STATE_FILE, MO_STATE_FILE]
    if not save_only_model:
        files.append("rng_state.pth" if world_size == 1 else f"rng_state_{process_index}.pth")
        if not sharded_optimizer:  # DeepSpeed / FSDP keep optimizer and scheduler in their own layout
            files += ["optimizer.pt", "scheduler.pt"]
    return files


def check_resumable(checkpoint: str, required: list[str]) -> None:
    """Raise ``FileNotFoundError`` naming the file when ``checkpoint`` cannot be resumed exactly."""
    if not os.path.isdir(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint directory")
    for name in required:
        path = os.path.join(checkpoint, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: this checkpoint cannot be resumed exactly")
    if os.path.exists(os.path.join(checkpoint, MARKER)):
        reason = incomplete_reason(checkpoint)
        if reason is not None:
            kind = "corrupt" if " is corrupt: " in reason else "incomplete"
            raise FileNotFoundError(f"{checkpoint} is {kind}: {reason}")
    else:
        logger.warning("%s has no %s: resuming it on the strength of its files alone", checkpoint, MARKER)


# ---- a full disk ---------------------------------------------------------------------------------------------------
LOW_SPACE_BYTES = 64 << 20  # a write that failed with less than this free on its file system ran out of space
_FULL_TEXT = ("no space left", "disk quota exceeded", "storagefull", "quotaexceeded")
_WRITE_FAILED_TEXT = ("unexpected pos", "basic_ios::clear", "file write failed", "pytorchstreamwriter failed")


class DiskFullError(OSError):
    """A checkpoint or the final model could not be written for lack of space (one line naming the directory)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def free_bytes(path: str) -> int | None:
    """Free bytes for this user on the file system of ``path`` (its nearest existing parent), or ``None``."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException, folder: str) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a write that ran out of space: ENOSPC / EDQUOT,
    safetensors' ``StorageFull``, or torch's stream-writer failure (``unexpected pos``, ``basic_ios::clear``, which
    carry no errno) with the file system of ``folder`` (nearly) full."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if any(m in text for m in _FULL_TEXT):
            return True
        if any(m in text for m in _WRITE_FAILED_TEXT):
            free = free_bytes(folder)
            return free is not None and free < LOW_SPACE_BYTES
    return False


@contextmanager
def disk_full_guard(directory: str, what: str) -> Iterator[None]:
    """Re-raise a write of ``what`` into ``directory`` that ran out of space as a one-line :class:`DiskFullError`."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc, directory):
            raise
        free = free_bytes(directory)
        left = "" if free is None else f" ({free:,} bytes free)"
        raise DiskFullError(
            f"no space left on {directory}{left} while writing {what}; a half-written checkpoint is skipped on "
            "resume: free space and rerun to resume from the newest complete checkpoint"
        ) from exc
