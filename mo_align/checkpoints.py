"""Checkpoints are complete or ignored: a manifest written last marks a finished checkpoint.

The trainer's checkpoint hook (``mo_align.trainer.state.save_checkpoint``) removes any old marker from the folder,
lets transformers write the checkpoint (model, optimizer, scheduler, RNG states, trainer state), adds ``mo_state.pt``, waits for every process, and only
then writes ``mo_complete.json``: the size of every file of the folder. Older checkpoints are rotated away
(``save_total_limit``) only after that, so a run killed mid-write still has its previous complete checkpoint.

On resume, :func:`last_complete_checkpoint` takes the newest checkpoint whose manifest matches the folder (each file
present with its recorded size) and says which ones it skipped and why; :func:`check_resumable` refuses, naming the
file, a checkpoint that lacks anything an exact resume needs (``scheduler.pt``, ``rng_state.pth``, ``mo_state.pt``,
...) or whose files do not match their manifest. transformers alone resumed a checkpoint without ``scheduler.pt`` or
``rng_state.pth`` with rc 0 to a different result, and picked the newest checkpoint even when it was half written.
"""

from __future__ import annotations

import json
import logging
import os
import re


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


def mark_complete(folder: str) -> None:
    """Write the manifest (every file and its size) atomically, as the last file of the checkpoint."""
    path = os.path.join(folder, MARKER)
    with open(path + ".tmp", "w") as f:
        json.dump({"version": 1, "files": _files(folder)}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def incomplete_reason(folder: str) -> str | None:
    """Why ``folder`` is not a complete checkpoint (``None`` when it is)."""
    path = os.path.join(folder, MARKER)
    if not os.path.exists(path):
        return f"no {MARKER} (killed while it was written, or written before mo_align marked checkpoints)"
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{MARKER} is unreadable ({type(exc).__name__})"
    for rel, size in sorted(files.items()):
        file = os.path.join(folder, rel)
        if not os.path.exists(file):
            return f"{file} is missing"
        if os.path.getsize(file) != size:
            return f"{file} is truncated or changed ({os.path.getsize(file)} bytes, {size} when saved)"
    return None


def last_complete_checkpoint(output_dir: str) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete ``checkpoint-N`` of ``output_dir`` and the newer ones skipped, with the reason."""
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
        reason = incomplete_reason(folder)
        if reason is None:
            return folder, skipped
        skipped.append((folder, reason))
    return None, skipped


def required_files(world_size: int, process_index: int, sharded_optimizer: bool, save_only_model: bool) -> list[str]:
    """Files an exact resume reads, beside the model weights (which transformers checks itself)."""
    files = ["trainer_state.json", "mo_state.pt"]
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
            raise FileNotFoundError(f"{checkpoint} is incomplete: {reason}")
    else:
        logger.warning("%s has no %s: resuming it on the strength of its files alone", checkpoint, MARKER)
