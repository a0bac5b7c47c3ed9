"""Preference conditioning inside ``MOGRPOTrainer``: prompts stated with a preference, each group scored with its own.

Before a generation batch is generated (the trainer's ``_generate_and_score_completions``), :meth:`Conditioning.
condition` draws one preference per prompt group of the *global* batch (:class:`~mo_align.preferences.sampler.
PreferenceSampler`, batch index = training generation batches so far), so the G completions of a prompt share it
and every rank agrees; each local row gets the statement in its prompt (:mod:`~mo_align.preferences.prompt`) and a
``mo_preference`` column (the K weights in objective order, which TRL passes to the reward functions as a keyword
argument). The batch is then scored row by row (:meth:`combine`: ``weighting.combine_rows``). Evaluation batches
and the per-objective evaluation state ``eval_preference`` (default 1/K each) on every prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mo_align.preferences.prompt import check_chat_template, check_prompt_kind, state_preference
from mo_align.preferences.sampler import PreferenceSampler, normalised, uniform
from mo_align.preferences.spec import NAME, check_objectives, refusal, render
from mo_align.trainer import trl_compat


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer
    from mo_align.weightings import ObjectiveStats, Weighting


PREFERENCE_COLUMN = "mo_preference"


class Conditioning:
    """The run's preference conditioning: spec, objective names, sampler, and the preferences of the last batch."""

    def __init__(self, spec: dict[str, Any], names: tuple[str, ...]) -> None:
        check_objectives(spec, names)
        self.spec, self.names = spec, tuple(names)
        self.sampler = PreferenceSampler(spec, len(names))
        k = len(names)
        self.eval_preference = normalised(spec["eval_preference"]) if spec.get("eval_preference") else uniform(k)
        self.rows: torch.Tensor | None = None  # (N, K) preferences of the last conditioned batch (global)

    @classmethod
    def build(cls, trainer: MOGRPOTrainer, weighting: Weighting) -> Conditioning | None:
        """The trainer's conditioning (None when its args have no ``preference_conditioning``), after checking the
        weighting instance, the dataset's prompt kind and the chat template (one line each)."""
        spec = getattr(trainer.args, "preference_conditioning", None)
        if not spec:
            return None
        why = refusal(type(weighting))
        if why:
            raise ValueError(f"{NAME}: weighting {weighting.name!r} cannot be preference-conditioned: {why}")
        cond = cls(spec, trainer.mo.objective_names)
        dataset = trainer.train_dataset
        if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__") and len(dataset):
            prompt = dataset[0]["prompt"]
            check_prompt_kind(prompt, spec["placement"], f"{NAME}.placement")
            if spec["placement"] == "system":
                kwargs = getattr(trainer, "chat_template_kwargs", None) or {}
                statement = cond.statement(cond.eval_preference)
                check_chat_template(trainer.processing_class, prompt, statement, f"{NAME}.placement", **kwargs)
        return cond

    def statement(self, weights: list[float]) -> str:
        return render(self.spec["template"], self.names, weights)

    def state_row(self, row: dict[str, Any], weights: list[float]) -> dict[str, Any]:
        """A new row: the prompt stated with ``weights``, and the ``mo_preference`` column."""
        prompt = state_preference(row["prompt"], self.statement(weights), self.spec["placement"])
        return {**row, "prompt": prompt, PREFERENCE_COLUMN: list(weights)}

    def condition(self, trainer: MOGRPOTrainer, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The local rows of a generation batch, stated (training: drawn per group; evaluation: ``eval_preference``)."""
        acc, n_local = trainer.accelerator, len(inputs)
        n = n_local * acc.num_processes
        if trainer.model.training:
            g = trainer.num_generations
            if n % g:
                raise ValueError(f"{NAME}: a generation batch of {n} rows is not whole groups of {g}")
            groups = self.sampler.next_batch(n // g)  # (P, K), one per prompt of the global batch
            self.rows = groups.repeat_interleave(g, dim=0).float()
            self._log(trainer, groups)
        else:
            self.rows = torch.tensor([self.eval_preference] * n, dtype=torch.float32)
        mine = self.rows[acc.process_index * n_local : (acc.process_index + 1) * n_local].tolist()
        return [self.state_row(row, w) for row, w in zip(inputs, mine, strict=True)]

    def state_eval_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The per-objective evaluation's rows, every prompt stated with ``eval_preference``."""
        return [self.state_row(row, self.eval_preference) for row in rows]

    def batch_rows(self, n: int) -> torch.Tensor:
        """(n, K) preferences of the batch being scored (the last conditioned one; ``eval_preference`` otherwise)."""
        if self.rows is not None and len(self.rows) == n:
            return self.rows
        return torch.tensor([self.eval_preference] * n, dtype=torch.float32)

    def combine(self, weighting: Weighting, stats: ObjectiveStats) -> torch.Tensor:
        return weighting.combine_rows(stats, self.batch_rows(len(stats.rewards)))

    def scalarize(self, weighting: Weighting, rewards: torch.Tensor) -> torch.Tensor:
        return weighting.scalarize_rows(rewards, self.batch_rows(len(rewards)))

    def _log(self, trainer: MOGRPOTrainer, groups: torch.Tensor) -> None:
        """``mo/preference/<objective>/mean|min|max`` over the batch's prompts."""
        metrics = trl_compat.metrics(trainer, "train")
        for k, name in enumerate(self.names):
            column = groups[:, k]
            metrics[f"mo/preference/{name}/mean"].append(float(column.mean()))
            metrics[f"mo/preference/{name}/min"].append(float(column.min()))
            metrics[f"mo/preference/{name}/max"].append(float(column.max()))

    # ---- checkpoint and records ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def record(self) -> dict[str, Any]:
        """What the run summary, the model card and the Hub push say: the block, the objectives, how to ask."""
        example = self.eval_preference
        return {
            **{k: v for k, v in self.spec.items() if v is not None},
            "objectives": list(self.names),
            "column": PREFERENCE_COLUMN,
            "eval_preference": list(self.eval_preference),
            "example": {
                "preference": dict(zip(self.names, example, strict=True)),
                "statement": self.statement(example),
            },
        }


def load_state(conditioning: Conditioning | None, state: dict[str, Any] | None) -> None:
    """Restore the sampler from a checkpoint's ``mo_state.pt`` part; a checkpoint trained with conditioning resumed
    without it, or the reverse, is refused in one line."""
    if conditioning is None and state is not None:
        raise ValueError(f"the checkpoint was trained with {NAME}; this run has none (resume with the same block)")
    if conditioning is not None and state is None:
        raise ValueError(f"the checkpoint was trained without {NAME}; its run cannot continue with preferences drawn")
    if conditioning is not None:
        conditioning.sampler.load_state_dict(state)
