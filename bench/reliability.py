"""P6: the reliability bounds, timed — clarity on 1 MB, an alias-bomb recipe, a killed verify server.

``python bench/reliability.py --out FILE.json`` prints one line; ``bench/run.py`` adds it to the table. Not a test:
no threshold fails anything (the tests check the same behaviour with generous bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clarity_1mb() -> float:
    """Worst of the adversarial 1 MB completions (both clarity modes); it was 68-89 s for unclosed boxes."""
    from mo_align.rewards.clarity import clarity_score

    worst = 0.0
    for unit in ("\\boxed{ x", "\\boxed{ x\n1. ", "(step ", " then", " - ", "\n   "):
        text = (unit * ((1 << 20) // len(unit) + 1))[: (1 << 20) - 1] + "}"
        start = time.perf_counter()
        clarity_score(text)
        clarity_score(text, strict=True)
        worst = max(worst, time.perf_counter() - start)
    return worst


def alias_bomb() -> float:
    """Time to refuse a 10^9-leaf billion-laughs recipe; it was 48-63 s to a MemoryError at 3.4 GB."""
    from mo_align.recipe import RecipeError, check_recipe

    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)] + ["run_name: *a8"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    start = time.perf_counter()
    try:
        check_recipe(f.name)
    except RecipeError:
        pass
    finally:
        os.unlink(f.name)
    return time.perf_counter() - start


def killed_server() -> tuple[int, float]:
    """Processes left 5 s after a kill -9 of the math-verify server (it was 2 workers, ~63 MB each, forever), and
    how long they took to go."""
    import psutil

    from mo_align.rewards.verify import VerifyClient

    client = VerifyClient(num_workers=2, timeout=0.5)
    client.warmup()
    server = psutil.Process(client._proc.pid)
    workers = [p.pid for p in server.children()]
    os.kill(server.pid, signal.SIGKILL)
    start = time.perf_counter()

    def alive() -> list[int]:
        out = []
        for pid in workers:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.NoSuchProcess:
                pass
        return out

    while alive() and time.perf_counter() - start < 5.0:
        time.sleep(0.01)
    gone_s, left = time.perf_counter() - start, alive()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    client.close()
    return len(left), gone_s


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    a = p.parse_args()
    sys.path.insert(0, ROOT)
    clarity_s, bomb_s = clarity_1mb(), alias_bomb()
    left, gone_s = killed_server()
    result = {
        "clarity_1mb_worst_s": clarity_s,
        "alias_bomb_refused_s": bomb_s,
        "orphans_after_server_kill": left,
        "workers_gone_s": gone_s,
    }
    with open(a.out, "w") as f:
        json.dump(result, f)
    sys.stdout.write(
        f"reliability: clarity on 1 MB {clarity_s:.3f} s (worst of 6 adversarial texts; bound 1 s, was 68-89 s); "
        f"alias-bomb recipe refused in {bomb_s * 1000:.1f} ms (was 48-63 s to a MemoryError); kill -9 of the verify "
        f"server leaves {left} processes (gone in {gone_s:.2f} s; was 2 orphans forever)\n"
    )


if __name__ == "__main__":
    main()
