"""accuracy ∈ {0, 1}: the completion's last ``\\boxed{...}`` is mathematically equivalent to the gold ``answer``.

Two modes (``reward_kwargs: {accuracy: {mode: ...}}``):

* ``"reference"`` — the paper's checker exactly (:mod:`mo_align.rewards.hendrycks`):
  reference extraction, Hendrycks normalisation, string equality. Pure string work, microseconds per completion.
* ``"verify"`` (default) — 1.0 if **either** the reference checker accepts, **or** math-verify finds the last
  ``\\boxed{...}`` (brace-matched) equivalent to the gold answer (``0.5`` vs ``\\frac{1}{2}``, ``x=3`` vs ``3``,
  ``(x+1)^2`` vs ``x^2+2x+1``, ``\\{2,1\\}`` vs ``\\{1,2\\}``...). In order, cheapest first:

  1. the reference checker on the whole completion (accepts → 1.0);
  2. no closed ``\\boxed{}`` → 0.0; the boxed text is reference-equal to the gold → 1.0;
  3. both sides plain numbers after normalisation (integers, decimals, ``\\frac{a}{b}`` of integers) → compared
     exactly, without math-verify (two numbers closer than 1e-4 relative but unequal still go to math-verify,
     which rounds);
  4. an answer cache (LRU over ``(gold, boxed)``; GRPO samples repeat answers a lot);
  5. input guards: an answer longer than ``max_answer_chars``, nested deeper than 20 braces, a numeric power tower
     (``9^{9^{9}}``), an exponent of 6+ digits or a factorial of 4+ digits never reaches sympy → 0.0;
  6. math-verify in worker processes (:mod:`mo_align.rewards.verify`): duplicates in a batch are checked
     once, the distinct pairs in parallel, each bounded by ``timeout`` seconds (soft SIGALRM limit inside the
     worker, SIGKILL + replacement after it). A timeout or an error scores 0.0 and is counted in :attr:`stats`.

Robustness: any single completion (``\\boxed{9^{9^{9^{9^9}}}}``, 1 MB of text, 10k unbalanced braces, deeply nested
fractions) is scored within ``timeout`` plus milliseconds of overhead, and the reward never raises on a completion
(an internal error scores 0.0 and counts in ``stats["errors"]``). A missing ``answer`` column is a configuration
error and raises; a row whose gold answer is ``None`` scores ``None`` (not applicable).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict, deque
from fractions import Fraction
from typing import Any

from mo_align.rewards.common import gold_answers, last_boxed, safe_text
from mo_align.rewards.hendrycks import is_equiv, reference_score, strip_string
from mo_align.rewards.verify import OK, PoolUnavailable, check_in_process, get_pool
from mo_align.text import excerpt


logger = logging.getLogger(__name__)

MODES = ("verify", "reference")

_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_NUMERIC_TOWER = re.compile(r"\^\s*\{[\d\s{}^*]*\^")  # an exponent group made of digits that holds another ^
_HUGE_EXPONENT = re.compile(r"\^\s*\{?\s*\d{6,}")
_HUGE_FACTORIAL = re.compile(r"\d{4,}\s*!")
_MAX_DEPTH = 20
_warned_unavailable = False


def _warn_unavailable(exc: Exception) -> None:
    global _warned_unavailable
    if not _warned_unavailable:
        _warned_unavailable = True
        logger.warning(
            "accuracy: math-verify workers unavailable (%s); checking in-process, soft time limit only", exc
        )


def too_complex(answer: str, max_chars: int = 300) -> bool:
    """Cheap guard: is this answer one that must not reach sympy (too long, too deep, or a huge number)?"""
    if len(answer) > max_chars:
        return True
    if _NUMERIC_TOWER.search(answer) or _HUGE_EXPONENT.search(answer) or _HUGE_FACTORIAL.search(answer):
        return True
    depth = 0
    for ch in answer:
        if ch == "{":
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif ch == "}":
            depth -= 1
    return False


def _canonical_integer(s: str) -> str:
    """``-007`` → ``-7``, ``-0`` → ``0``; on strings, so a 10k-digit integer is cheap (``int()`` refuses it)."""
    negative = s.startswith("-")
    digits = s.lstrip("-").lstrip("0") or "0"
    return "-" + digits if negative and digits != "0" else digits


def _rational(s: str) -> Fraction | None:
    """An exact value for a plain number (integer, decimal, ``\\frac{a}{b}`` of integers, after normalisation)."""
    if len(s) > 50:
        return None
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(s)
        m = _FRACTION.fullmatch(s)
        if m and int(m.group(3)) != 0:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _normalised(answer: str) -> str | None:
    try:
        return strip_string(answer)
    except Exception:
        return None


class AccuracyReward:
    """The accuracy objective as a picklable callable with TRL's reward signature.

    Args:
        mode (`str`, defaults to ``"verify"``): ``"verify"`` or ``"reference"`` (see the module docstring).
        timeout (`float`, defaults to ``0.5``): seconds per math-verify check (hard limit).
        num_workers (`int`, *optional*): math-verify worker processes (default ``min(2, cpu_count)``); ``0`` checks
            in-process with only the soft limit (main thread only) — for debugging, not for training.
        max_answer_chars (`int`, defaults to ``300``): longer boxed answers are compared as strings only.
        cache_size (`int`, defaults to ``65536``): entries of the ``(gold, boxed) → score`` cache.

    Attributes:
        stats (`dict[str, int]`): counters since construction — ``completions``, ``no_box``, ``reference_hits``
            (accepted by the string checks), ``number_checks``, ``cache_hits``, ``guarded``, ``verified`` (sent to
            math-verify), ``timeouts``, ``errors``, ``fallbacks`` (checks done in-process because no worker started).
        recent_failures (`deque`): the last 32 ``(gold, boxed, outcome)`` that timed out or failed in math-verify.
    """

    __name__ = "accuracy"

    def __init__(
        self,
        mode: str = "verify",
        timeout: float = 0.5,
        num_workers: int | None = None,
        max_answer_chars: int = 300,
        cache_size: int = 65536,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"accuracy mode must be one of {MODES}, got {excerpt(mode)}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"accuracy timeout must be finite and > 0, got {excerpt(timeout)}")
        self.mode = mode
        self.timeout = float(timeout)
        self.num_workers = num_workers
        self.max_answer_chars = int(max_answer_chars)
        self.cache_size = int(cache_size)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.recent_failures: deque[tuple[str, str, str]] = deque(maxlen=32)
        self.stats = dict.fromkeys(
            (
                "completions",
                "no_box",
                "reference_hits",
                "number_checks",
                "cache_hits",
                "guarded",
                "verified",
                "timeouts",
                "errors",
                "fallbacks",
            ),
            0,
        )

    # Pickling (deepcopy, spawn-based workers, ...) carries the settings only; caches and locks are rebuilt.
    def __getstate__(self) -> dict[str, Any]:
        runtime = ("_cache", "_lock", "stats", "recent_failures")
        return {k: v for k, v in self.__dict__.items() if k not in runtime}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"AccuracyReward(mode={self.mode!r}, timeout={self.timeout})"

    # -- the reward --
    HEALTH = ("timeouts", "errors", "fallbacks", "guarded", "verified", "cache_hits")

    def __call__(
        self, prompts=None, completions=None, completion_ids=None, answer=None, log_metric=None, **kwargs
    ) -> list[float | None]:
        """Scores; through TRL's ``log_metric`` hook, this batch's checker health as ``mo/reward_health/<name>/
        <counter>`` (timeouts, errors, fallbacks to in-process checks, guarded inputs, math-verify calls, cache
        hits; counts on this process, averaged over processes by TRL)."""
        completions = list(completions or [])
        golds = gold_answers(answer, kwargs.get("solution"), len(completions), "the accuracy reward")
        before = {k: self.stats[k] for k in self.HEALTH}
        out = self.score([safe_text(c) for c in completions], golds)
        if log_metric is not None:
            for key in self.HEALTH:
                log_metric(f"mo/reward_health/{self.__name__}/{key}", float(self.stats[key] - before[key]))
        return out

    def warmup(self) -> None:
        """Start the math-verify workers now (verify mode), so the first batch does not pay their start-up."""
        if self.mode == "verify" and self.num_workers != 0:
            try:
                get_pool(self.num_workers, self.timeout).warmup()
            except PoolUnavailable as exc:
                _warn_unavailable(exc)

    def score(self, texts: list[str], golds: list[Any]) -> list[float | None]:
        """Scores of completion texts against gold answers (``None`` gold → ``None``)."""
        with self._lock:
            self.stats["completions"] += len(texts)
            out: list[float | None] = [None] * len(texts)
            pending: dict[tuple[str, str], list[int]] = {}
            for i, (text, gold) in enumerate(zip(texts, golds)):
                if gold is None:
                    continue
                try:
                    gold = gold if isinstance(gold, str) else str(gold)
                    if self.mode == "reference":
                        out[i] = reference_score(text, gold)
                        continue
                    score, key = self._cheap(text, gold)
                    if score is not None:
                        out[i] = score
                    else:
                        pending.setdefault(key, []).append(i)
                except Exception:
                    self.stats["errors"] += 1
                    out[i] = 0.0
            if pending:
                try:
                    self._verify(pending, out)
                except Exception as exc:  # never let the checker take the trainer down
                    logger.warning(
                        "accuracy: math-verify failed on a batch (%s: %s); scoring 0.0", type(exc).__name__, exc
                    )
                    for key, rows in pending.items():
                        for i in rows:
                            if out[i] is None:
                                out[i] = 0.0
                                self.stats["errors"] += 1
                        self.recent_failures.append((key[0], key[1], f"error: {type(exc).__name__}"))
            return out

    def _cheap(self, text: str, gold: str) -> tuple[float | None, Any]:
        """Steps 1-5 of the verify mode: a score, or ``(None, key)`` when math-verify must decide."""
        if reference_score(text, gold) == 1.0:
            self.stats["reference_hits"] += 1
            return 1.0, None
        pred = last_boxed(text)
        if pred is None:
            self.stats["no_box"] += 1
            return 0.0, None
        if is_equiv(pred, gold):
            self.stats["reference_hits"] += 1
            return 1.0, None
        pred_norm, gold_norm = _normalised(pred), _normalised(gold)
        if (
            pred_norm is not None
            and gold_norm is not None
            and _INTEGER.fullmatch(pred_norm)
            and _INTEGER.fullmatch(gold_norm)
        ):
            self.stats["number_checks"] += 1
            return float(_canonical_integer(pred_norm) == _canonical_integer(gold_norm)), None
        if pred_norm is not None and gold_norm is not None:
            a, b = _rational(pred_norm), _rational(gold_norm)
            if a is not None and b is not None:
                if a == b:
                    self.stats["number_checks"] += 1
                    return 1.0, None
                if abs(a - b) > Fraction(1, 10_000) * max(1, abs(b)):  # far beyond math-verify's rounding
                    self.stats["number_checks"] += 1
                    return 0.0, None
        key = (gold, pred)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.stats["cache_hits"] += 1
            return cached, None
        if too_complex(pred, self.max_answer_chars) or too_complex(gold, self.max_answer_chars):
            self.stats["guarded"] += 1
            return 0.0, None
        return None, key

    def _verify(self, pending: dict[tuple[str, str], list[int]], out: list[float | None]) -> None:
        keys = list(pending)
        self.stats["verified"] += len(keys)
        results = None
        if self.num_workers != 0:
            try:
                results = get_pool(self.num_workers, self.timeout).run(keys)
            except PoolUnavailable as exc:
                _warn_unavailable(exc)
        if results is None:
            self.stats["fallbacks"] += len(keys)
            results = [check_in_process(gold, pred, 0.8 * self.timeout) for gold, pred in keys]
        for key, (outcome, value) in zip(keys, results):
            if outcome == OK:
                score = float(bool(value))
            else:
                score = 0.0
                self.stats["timeouts" if outcome.endswith("timeout") else "errors"] += 1
                self.recent_failures.append((key[0], key[1], f"{outcome}: {value}" if value else outcome))
            self._cache[key] = score
            for i in pending[key]:
                out[i] = score
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
