"""Model cards and Hub uploads for mo_align runs.

* :func:`write_model_card` writes ``README.md`` (YAML front matter + the run's story: algorithm and hyperparameters,
  objectives, per-objective eval table, weight trajectory plot ``mo_weights.png``, interference events, dataset,
  papers, the exact launch command) into a run directory, from the run summary (``mo_summary.json``).
* :func:`trainer_model_card` does the same from a live ``MOGRPOTrainer``; ``MOGRPOTrainer.create_model_card`` calls
  it, so ``push_to_hub: true`` (transformers' own push at save time) uploads mo_align's card instead of TRL's.
* :func:`push_run` uploads a finished run directory (model or adapter, tokenizer, card, plot) with an
  ``HfApi``-like client (injectable, so tests run offline with a fake).
* :func:`main` is ``mo-align push RUN_DIR --repo-id ID [--private] [--token-env HF_TOKEN]``.

Modules: :mod:`~mo_align.hub.push` (upload and command line); the card's content is :mod:`mo_align.runs.card`
(the trainer writes the card at every checkpoint; re-exported as :mod:`mo_align.hub.card`), with its template
``model_card.md`` in this package; secrets are :mod:`mo_align.redaction` (re-exported as
:mod:`mo_align.hub.redaction`). The weight plot ``mo_weights.png`` is the run report's
(:func:`mo_align.runs.plotting.plot_run_weights`, exported here as :func:`plot_weights`).

Secrets: the token is read from an environment variable, never from the command line, and is never printed,
logged or written: every text this package writes or prints goes through :func:`redact`, and files of the run that
contain the token (e.g. a ``training_args.bin`` pickled with ``hub_token`` set) are left out of the upload.
"""

from __future__ import annotations

from mo_align.hub.push import (
    DEFAULT_COMMIT_MESSAGE,
    IGNORE_PATTERNS,
    PUSH_DESCRIPTION,
    WEIGHT_FILES,
    PushError,
    UploadError,
    load_summary,
    main,
    push_run,
    upload_candidates,
)
from mo_align.redaction import files_containing, redact
from mo_align.runs.card import (
    CARD_FILE,
    GRPO_PAPER,
    PAPER,
    PLOT_FILE,
    SUMMARY_FILE,
    algorithm_description,
    paper_links,
    render_model_card,
    trainer_model_card,
    write_model_card,
)
from mo_align.runs.plotting import plot_run_weights as plot_weights  # shared with the run report


__all__ = [
    "CARD_FILE",
    "DEFAULT_COMMIT_MESSAGE",
    "GRPO_PAPER",
    "IGNORE_PATTERNS",
    "PAPER",
    "PLOT_FILE",
    "PUSH_DESCRIPTION",
    "SUMMARY_FILE",
    "WEIGHT_FILES",
    "PushError",
    "UploadError",
    "algorithm_description",
    "files_containing",
    "load_summary",
    "main",
    "paper_links",
    "plot_weights",
    "push_run",
    "redact",
    "render_model_card",
    "trainer_model_card",
    "upload_candidates",
    "write_model_card",
]
