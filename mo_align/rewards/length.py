"""conciseness ∈ {0, 1}: a completion is shorter than the running mean length of all training completions so far.

Reference behaviour (``multiobjective_math/conciseness.py`` plus the trainer's bookkeeping in the
reference code): lengths are token counts of the completion including EOS (TRL's ``completion_ids``);
on a training batch the batch's lengths are first added to the running mean, then every completion scores
``1.0 if length < mean else 0.0``; in evaluation the mean is the training mean at that moment and is not updated;
before any training batch everything scores 1.0. Unlike the reference, the mean is checkpointed
(``state_dict`` / ``load_state_dict``, called by ``MOGRPOTrainer``), so a resumed run continues it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mo_align.rewards.accuracy import AccuracyReward
from mo_align.rewards.common import gold_answers, safe_text


def _length(ids: Any) -> int:
    try:
        return len(ids)
    except TypeError:
        return 0


class ConcisenessReward:
    """The stateful conciseness objective with TRL's reward signature.

    Args:
        reference_length (`float`, *optional*): score the reward itself against this fixed length instead of the
            running mean (the running mean is still tracked).
        eval_reference_length (`float`, *optional*): the fixed reference of :meth:`reference_scores`. When unset it
            is ``reference_length`` if that is set, else it is frozen to the mean length of the **first training
            batch** (over all processes), i.e. the initial policy's sampled mean length — the fixed reference that
            the lab also uses, because the running mean ratchets toward the policy and hides a collapse.
        gate_on_accuracy (`bool`, defaults to ``False``): the reference's commented-out variant: an incorrect
            completion scores 0.0 (even before the first training batch); needs the ``answer`` column.
        accuracy_mode (`str`, defaults to ``"verify"``): the checker of the gate (``"reference"`` = that variant's).
        accuracy_kwargs (`dict`, *optional*): further :class:`~mo_align.rewards.accuracy.AccuracyReward` arguments.

    Trainer hooks (attributes):
        training (`bool`): ``MOGRPOTrainer`` sets it before every reward call; only training calls move the mean.
        all_gather_lengths (`Callable[[list[int]], list[int]]` or ``None``): under several processes TRL calls the
            reward on each process's local completions only, so a local mean would differ between ranks. When set
            (by the trainer, e.g. ``lambda xs: accelerate.utils.gather_object(list(xs))``), a training call adds
            the lengths of *all* processes to the mean (and to the first-batch reference), so every rank holds the
            same state; each rank still scores only its own completions. Every rank must then call the reward on
            every training batch (a collective). Default ``None``: local lengths.

    Evaluation API (for per-objective evaluation; nothing here changes state):
        ``__call__`` (the reward, the metric ``conciseness``): against the running mean (or ``reference_length``).
        :meth:`reference_scores` (same signature): against :attr:`fixed_reference`; ``None`` per completion while
            no fixed reference exists yet (an evaluation before the first training batch without
            ``eval_reference_length``).
        :meth:`running_mean_scores` (same signature): against the running mean, whatever ``reference_length`` is.
        :attr:`last_reference_scores`: :meth:`reference_scores` of the completions of the latest call, so an
            evaluation loop can log both values without scoring twice.

    State (``state_dict``): ``total_tokens``, ``count`` (the running mean is their ratio) and
    ``first_batch_mean``.
    """

    __name__ = "conciseness"

    def __init__(
        self,
        reference_length: float | None = None,
        eval_reference_length: float | None = None,
        gate_on_accuracy: bool = False,
        accuracy_mode: str = "verify",
        accuracy_kwargs: dict[str, Any] | None = None,
    ) -> None:
        for name, value in (("reference_length", reference_length), ("eval_reference_length", eval_reference_length)):
            if value is not None and not value > 0:
                raise ValueError(f"conciseness {name} must be > 0, got {value}")
        self.reference_length = None if reference_length is None else float(reference_length)
        self.eval_reference_length = None if eval_reference_length is None else float(eval_reference_length)
        self.gate_on_accuracy = bool(gate_on_accuracy)
        self._accuracy = None
        if self.gate_on_accuracy:
            self._accuracy = AccuracyReward(mode=accuracy_mode, **(accuracy_kwargs or {}))
        self.training = True
        self.all_gather_lengths: Callable[[list[int]], Sequence[int]] | None = None
        self.total_tokens = 0
        self.count = 0
        self.first_batch_mean: float | None = None
        self.last_reference_scores: list[float | None] | None = None

    # -- state --
    @property
    def running_mean(self) -> float | None:
        """Mean length of every training completion so far (``None`` before the first training batch)."""
        return self.total_tokens / self.count if self.count else None

    @property
    def fixed_reference(self) -> float | None:
        """The length :meth:`reference_scores` compares against (see the class docstring)."""
        if self.eval_reference_length is not None:
            return self.eval_reference_length
        if self.reference_length is not None:
            return self.reference_length
        return self.first_batch_mean

    def missing_reference(self, fixed: bool = False) -> str | None:
        """Why an evaluation now would score against no reference length (``None`` when there is one): the
        reward itself (``fixed`` false) has none before the first training batch unless ``reference_length`` is
        set (it then scores 1.0, as the reference code does), :meth:`reference_scores` (``fixed``) has none before
        the first training batch unless a reference length is given. The trainer reports such an evaluation as not
        available, so no Δ starts from it."""
        if fixed:
            if self.fixed_reference is None:
                return "no fixed reference length before the first training batch (set eval_reference_length)"
            return None
        if self.reference_length is None and self.running_mean is None:
            return "no running-mean length before the first training batch"
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"total_tokens": self.total_tokens, "count": self.count, "first_batch_mean": self.first_batch_mean}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total_tokens = int(state["total_tokens"])
        self.count = int(state["count"])
        first = state.get("first_batch_mean")
        self.first_batch_mean = None if first is None else float(first)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["all_gather_lengths"] = None  # a process-local hook (closes over the accelerator)
        return state

    # -- scoring --
    @staticmethod
    def _compare(lengths: list[int], reference: float | None, empty: float | None) -> list[float | None]:
        if reference is None:
            return [empty] * len(lengths)
        return [float(n < reference) for n in lengths]

    def _correct(self, completions: Any, answer: Any, n: int, solution: Any = None) -> list[float | None] | None:
        """Accuracy of each completion when gated, else ``None``."""
        if self._accuracy is None:
            return None
        golds = gold_answers(answer, solution, n, "conciseness with gate_on_accuracy")
        texts = [safe_text(c) for c in (completions if completions is not None else [""] * n)]
        return self._accuracy.score(texts, golds)

    @staticmethod
    def _gated(scores: list[float | None], correct: list[float | None] | None) -> list[float | None]:
        if correct is None:
            return scores
        return [None if c is None or s is None else s * c for s, c in zip(scores, correct)]

    @staticmethod
    def _lengths(completion_ids: Any) -> list[int]:
        if completion_ids is None:
            raise ValueError("the conciseness reward needs completion_ids (token lengths)")
        return [_length(ids) for ids in completion_ids]

    def _update(self, lengths: list[int]) -> None:
        batch = (
            list(lengths) if self.all_gather_lengths is None else [int(n) for n in self.all_gather_lengths(lengths)]
        )
        if not batch:
            return
        self.total_tokens += sum(batch)
        self.count += len(batch)
        if self.first_batch_mean is None:
            self.first_batch_mean = sum(batch) / len(batch)

    def __call__(
        self, prompts=None, completions=None, completion_ids=None, answer=None, **kwargs
    ) -> list[float | None]:
        lengths = self._lengths(completion_ids)
        correct = self._correct(
            completions, answer, len(lengths), kwargs.get("solution")
        )  # one accuracy pass for both score lists
        if self.training:
            self._update(lengths)
        if self.reference_length is not None:
            main = self._compare(lengths, self.reference_length, 1.0)
        else:
            main = self._compare(lengths, self.running_mean, 1.0)
        reference = self._compare(lengths, self.fixed_reference, None)
        main, reference = self._gated(main, correct), self._gated(reference, correct)
        self.last_reference_scores = reference
        return main

    def reference_scores(
        self, prompts=None, completions=None, completion_ids=None, answer=None, **kwargs
    ) -> list[float | None]:
        """Conciseness against :attr:`fixed_reference` (no state change); ``None`` while there is none."""
        lengths = self._lengths(completion_ids)
        scores = self._compare(lengths, self.fixed_reference, None)
        return self._gated(scores, self._correct(completions, answer, len(lengths), kwargs.get("solution")))

    def running_mean_scores(
        self, prompts=None, completions=None, completion_ids=None, answer=None, **kwargs
    ) -> list[float | None]:
        """Conciseness against the current running mean (1.0 before any training batch; no state change)."""
        lengths = self._lengths(completion_ids)
        scores = self._compare(lengths, self.running_mean, 1.0)
        return self._gated(scores, self._correct(completions, answer, len(lengths), kwargs.get("solution")))
