"""K learned objectives from one sequence classifier with K outputs, computed with one forward pass per batch.

TRL scores a reward *model* (an ``nn.Module`` in ``reward_funcs``) with its first logit only, and K separate models
would cost K forwards. :class:`MultiHeadRewardModel` wraps one ``AutoModelForSequenceClassification`` with
``num_labels = K`` and gives K plain reward callables, one per head name (the name becomes TRL's metric/column
name). TRL calls the K callables one after the other with the same batch; the first call runs the forward and
caches the (N, K) scores, the other K - 1 reuse them. The cache holds the latest batch only and is keyed on the
batch's content (prompt and completion texts), so a new batch always gets a new forward.

Usage::

    rm = MultiHeadRewardModel.from_pretrained("path/to/rm", head_names=["helpful", "harmless", "honest"])
    trainer = MOGRPOTrainer(model, reward_funcs=rm.reward_funcs(), ...)

Inputs are built like TRL's own reward-model path: a conversational sample is rendered with the tokenizer's chat
template over ``prompt + completion`` messages; a standard sample is ``prompt + completion``. Batches are padded on
the right; the classifier reads the last non-pad token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def _is_conversational(sample: Any) -> bool:
    return isinstance(sample, list) and all(isinstance(m, dict) and "role" in m for m in sample)


class HeadReward:
    """Reward callable for head ``index`` of a :class:`MultiHeadRewardModel` (TRL's reward signature)."""

    def __init__(self, model: MultiHeadRewardModel, index: int, name: str) -> None:
        self.model = model
        self.index = index
        self.__name__ = name

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        scores = self.model.scores(prompts, completions)
        return scores[:, self.index].tolist()

    def __repr__(self) -> str:
        return f"HeadReward({self.__name__!r}, head={self.index})"


class MultiHeadRewardModel:
    """One sequence classifier, K named heads, one forward per batch.

    Args:
        model: a ``PreTrainedModel`` for sequence classification with ``config.num_labels == len(head_names)``.
        tokenizer: its tokenizer (a pad token is required; the eos token is used if there is none).
        head_names: the K objective names, in the order of the model's logits.
        max_length (`int`, *optional*): truncate inputs to this many tokens.
        batch_size (`int`, *optional*): split the forward into chunks of this many samples (default: one forward).
        chat_template_kwargs (`dict`, *optional*): extra arguments of ``apply_chat_template``.

    Attributes:
        forward_count (`int`): model forward calls so far (one per distinct batch when ``batch_size`` is unset).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        head_names: Sequence[str],
        max_length: int | None = None,
        batch_size: int | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        names = list(head_names)
        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != len(names):
            raise ValueError(f"the model has num_labels={num_labels} but {len(names)} head names were given: {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"head names must be distinct: {names}")
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad token nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.head_names = names
        self.max_length = max_length
        self.batch_size = batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.forward_count = 0
        self._cached_key: tuple | None = None
        self._cached_scores: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, path: str, head_names: Sequence[str], **kwargs: Any) -> MultiHeadRewardModel:
        """Load model and tokenizer from ``path`` (``model_kwargs`` go to ``from_pretrained`` of the model)."""
        model_kwargs = kwargs.pop("model_kwargs", None) or {}
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(head_names), **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, head_names, **kwargs)

    def reward_funcs(self) -> list[HeadReward]:
        """The K reward callables, in head order."""
        return [HeadReward(self, i, name) for i, name in enumerate(self.head_names)]

    # -- scoring --
    def texts(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[str]:
        """The classifier's input text of each (prompt, completion) pair."""
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if _is_conversational(prompt) or _is_conversational(completion):
                messages = (prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]) + (
                    completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
                )
                out.append(self.tokenizer.apply_chat_template(messages, tokenize=False, **self.chat_template_kwargs))
            else:
                out.append(str(prompt) + str(completion))
        return out

    def _forward(self, texts: list[str], conversational: bool) -> torch.Tensor:
        device = next(self.model.parameters()).device
        chunk = self.batch_size or len(texts)
        parts = []
        for start in range(0, len(texts), chunk):
            enc = self.tokenizer(
                texts[start : start + chunk],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                truncation=self.max_length is not None,
                max_length=self.max_length,
                add_special_tokens=not conversational,
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.inference_mode():
                logits = self.model(**enc).logits
            self.forward_count += 1
            parts.append(logits.float().cpu())
        return torch.cat(parts, dim=0)

    def scores(self, prompts: Sequence[Any], completions: Sequence[Any]) -> torch.Tensor:
        """(N, K) scores of the batch: one forward for a new batch, the cached result for a repeated one."""
        prompts = list(prompts or [])
        completions = list(completions or [])
        if not completions:
            return torch.zeros(0, len(self.head_names))
        texts = self.texts(prompts, completions)
        key = tuple(texts)
        if key != self._cached_key or self._cached_scores is None:
            conversational = _is_conversational(prompts[0]) or _is_conversational(completions[0])
            self._cached_scores = self._forward(texts, conversational)
            self._cached_key = key
        return self._cached_scores


__all__ = ["HeadReward", "MultiHeadRewardModel"]
