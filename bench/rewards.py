"""P5: accuracy-reward throughput (512 ordinary completions) and the worst adversarial completion's latency."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    a = p.parse_args()
    sys.path.insert(0, ROOT)
    from mo_align.rewards.accuracy import AccuracyReward
    from tests.test_accuracy import ADVERSARIAL, _golds, ordinary_batch

    golds = _golds()
    warm = AccuracyReward()
    warm.warmup()
    times = []
    for seed in range(5):
        acc = AccuracyReward()  # empty answer cache each time
        texts, answers = ordinary_batch(golds, seed)
        t0 = time.perf_counter()
        acc(None, texts, None, answer=answers)
        times.append(time.perf_counter() - t0)
    worst, worst_name = 0.0, ""
    for name, text in ADVERSARIAL.items():
        acc = AccuracyReward()
        t0 = time.perf_counter()
        acc(None, [text], None, answer=["3"])
        dt = time.perf_counter() - t0
        if dt > worst:
            worst, worst_name = dt, name
    result = {"ordinary_512_median_s": sorted(times)[len(times) // 2], "ordinary_512_all_s": times,
              "worst_adversarial_s": worst, "worst_adversarial": worst_name}  # fmt: skip
    with open(a.out, "w") as f:
        json.dump(result, f)
    sys.stdout.write(
        f"accuracy reward: 512 ordinary completions in {result['ordinary_512_median_s']:.3f} s (median of 5, target "
        f"<= 1 s); worst adversarial completion {worst:.3f} s ({worst_name}, bound 1 s)\n"
    )


if __name__ == "__main__":
    main()
