"""The names of the files in a run directory that several modules read or write, each spelled once here.

transformers, PEFT and TRL write most of them (their own constants hold the same names: ``CONFIG_NAME``,
``SAFE_WEIGHTS_NAME``, ``TRAINER_STATE_NAME``, ...; this module keeps the readers light, without importing them);
``mo_state.pt`` is the trainer's (:mod:`mo_align.trainer.state`), ``sweep_recipe.yaml`` the sweep's
(:mod:`mo_align.sweep.run`), which the soup reads too. A name that one module alone uses stays with that module
(``mo_summary.json``: :mod:`mo_align.runs.summary`, ``mo_finished.json``: :mod:`mo_align.runs.finished`, ...).
"""

from __future__ import annotations


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "CONFIG_FILE",
    "MODEL_WEIGHTS",
    "MODEL_WEIGHTS_INDEX",
    "MO_STATE_FILE",
    "SWEEP_RECIPE_FILE",
    "TRAINER_STATE_FILE",
    "TRAIN_RESULTS_FILE",
    "WEIGHT_FILES",
]

CONFIG_FILE = "config.json"  # the model's configuration (transformers)
MODEL_WEIGHTS = "model.safetensors"  # a full model's weights, one file (transformers)
MODEL_WEIGHTS_INDEX = "model.safetensors.index.json"  # ... or sharded, with this index
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA adapter's configuration (PEFT)
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # its weights (PEFT)
WEIGHT_FILES = (MODEL_WEIGHTS, MODEL_WEIGHTS_INDEX, ADAPTER_WEIGHTS)  # any of them: the final model is saved
TRAINER_STATE_FILE = "trainer_state.json"  # transformers' Trainer state, in every checkpoint and at the end
TRAIN_RESULTS_FILE = "train_results.json"  # the final metrics mo_align.train saves after training
MO_STATE_FILE = "mo_state.pt"  # the multi-objective state beside each checkpoint (mo_align.trainer.state)
SWEEP_RECIPE_FILE = "sweep_recipe.yaml"  # the recipe of a sweep point, in its run directory (mo_align.sweep.run)
