"""Deterministic synthetic arithmetic problems with exact answers, sized for CPU demos, the lab and tests.

Each problem is "Compute a o1 b o2 c." with digits 1–9 and o ∈ {+, −}, restricted so every intermediate and final
result is >= 0 (1,899 problems in all). Rows have the paper's schema: ``prompt`` (one user message), ``answer``
(the gold answer as a string), ``level``, ``subject``, ``unique_id``.
"""

from __future__ import annotations

import itertools
import random

from datasets import Dataset


INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."


def all_problems() -> list[tuple[int, str, int, str, int, int]]:
    """Every (a, o1, b, o2, c, answer) with non-negative intermediate and final results, in a fixed order."""
    out = []
    for a, b, c in itertools.product(range(1, 10), repeat=3):
        for o1, o2 in itertools.product("+-", repeat=2):
            mid = a + b if o1 == "+" else a - b
            end = mid + c if o2 == "+" else mid - c
            if mid >= 0 and end >= 0:
                out.append((a, o1, b, o2, c, end))
    return out


def make_synthetic(n_train: int = 256, n_eval: int = 64, seed: int = 0, instruction: str = INSTRUCTION) -> dict:
    """Split the problem set with a fixed shuffle into ``{"train": Dataset, "test": Dataset}`` (disjoint)."""
    problems = all_problems()
    if n_train + n_eval > len(problems):
        raise ValueError(f"n_train + n_eval must be <= {len(problems)}, got {n_train + n_eval}")
    random.Random(seed).shuffle(problems)

    def rows(chunk: list, split: str) -> Dataset:
        cols: dict[str, list] = {"prompt": [], "answer": [], "level": [], "subject": [], "unique_id": []}
        for i, (a, o1, b, o2, c, ans) in enumerate(chunk):
            cols["prompt"].append([{"role": "user", "content": f"Compute {a} {o1} {b} {o2} {c}.{instruction}"}])
            cols["answer"].append(str(ans))
            cols["level"].append(1)
            cols["subject"].append("arithmetic")
            cols["unique_id"].append(f"synthetic/{split}/{a}{o1}{b}{o2}{c}/{i}")
        return Dataset.from_dict(cols)

    return {"train": rows(problems[n_eval : n_eval + n_train], "train"), "test": rows(problems[:n_eval], "test")}
