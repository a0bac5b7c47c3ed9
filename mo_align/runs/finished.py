"""A finished run: ``mo_finished.json``, written by ``mo_align.train`` once the final model is saved.

A re-run of a recipe whose ``output_dir`` holds a finished run is a no-op that says so (:func:`finished_message`):
auto-resume would otherwise take the last checkpoint and overwrite the final model. ``continue_finished_run: true``
trains on (up to a raised ``max_steps``); the marker is removed before the final model is written again and
rewritten after, so a marker always stands beside a complete final model. Runs finished before the marker existed
are recognised by what ``mo_align.train`` wrote at their end: ``train_results.json``, ``trainer_state.json`` and
the model weights.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mo_align.runs.files import TRAIN_RESULTS_FILE, TRAINER_STATE_FILE, WEIGHT_FILES


FINISHED_FILE = "mo_finished.json"


def mark_finished(output_dir: str, global_step: int, max_steps: int) -> None:
    """Write the marker atomically (after the final model)."""
    path = os.path.join(output_dir, FINISHED_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump({"version": 1, "global_step": global_step, "max_steps": max_steps}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def unmark_finished(output_dir: str) -> None:
    """Remove the marker (before the final model is written again)."""
    path = os.path.join(output_dir, FINISHED_FILE)
    if os.path.exists(path):
        os.remove(path)


def finished_run(output_dir: str) -> dict[str, Any] | None:
    """``{"global_step", "source"}`` of the finished run in ``output_dir`` (``None`` when there is none)."""
    marker = os.path.join(output_dir, FINISHED_FILE)
    if os.path.exists(marker):
        try:
            with open(marker) as f:
                step = json.load(f).get("global_step")
        except (OSError, ValueError, AttributeError):
            step = None  # unreadable, but present: still finished
        return {"global_step": step, "source": FINISHED_FILE}
    state = os.path.join(output_dir, TRAINER_STATE_FILE)
    written_at_the_end = [os.path.join(output_dir, TRAIN_RESULTS_FILE), state]
    if all(os.path.isfile(p) for p in written_at_the_end) and any(
        os.path.isfile(os.path.join(output_dir, w)) for w in WEIGHT_FILES
    ):
        try:
            with open(state) as f:
                step = json.load(f).get("global_step")
        except (OSError, ValueError, AttributeError):
            step = None
        return {"global_step": step, "source": "train_results.json, trainer_state.json and the final model"}
    return None


def finished_message(output_dir: str, max_steps: int) -> str | None:
    """The one line a re-run of a finished run prints (``None`` when ``output_dir`` holds no finished run)."""
    run = finished_run(output_dir)
    if run is None:
        return None
    step = run["global_step"]
    at = f"step {step}" if step is not None else "its last step"
    further = f" to max_steps {max_steps}" if step is not None and max_steps > step else ""
    return (
        f"{output_dir} holds a finished run ({at}; {run['source']}): nothing to do. Set continue_finished_run: true "
        f"to train on{further} from its newest checkpoint (its final model is then replaced), or use another "
        "output_dir"
    )
