"""The horizon check: weights read at relative times of runs of different lengths, by hand."""

from __future__ import annotations

import math

import pytest

from mo_align.lab.horizon import horizon_lines, trajectory, weights_at


def _records(pairs):
    return [{"step": s, "weights": {"a": a, "b": 1 - a}} for s, a in pairs]


def test_weights_at_takes_the_last_record_at_or_before_the_step():
    recs = _records([(1, 0.5), (3, 0.6), (5, 0.8)])
    assert weights_at(recs, 0) == {"a": 0.5, "b": 0.5}  # before any record: the first
    assert weights_at(recs, 3) == {"a": 0.6, "b": 0.4}
    assert weights_at(recs, 4.9) == {"a": 0.6, "b": 0.4}
    assert weights_at(list(reversed(recs)), 100) == {"a": 0.8, "b": pytest.approx(0.2)}
    assert weights_at([], 3) is None


def test_a_long_and_a_short_run_are_read_at_the_same_relative_times():
    long = {"weights": _records([(s, 0.5 + 0.001 * s) for s in range(1, 401, 2)])}  # 200 updates over 400 steps
    short = {"weights": _records([(s, 0.5 + 0.008 * s) for s in range(1, 51, 2)])}  # 25 updates, 8x the step
    lt, st = trajectory(long), trajectory(short)
    # relative time 1/2 of the last records (399 and 49): the long run's record at step 199 (a = 0.699), the short
    # run's at step 23 (a = 0.684)
    assert math.isclose(lt[2]["a"], 0.699 / 0.501) and math.isclose(st[2]["a"], 0.684 / 0.508)
    assert lt[0] == {"a": 1.0, "b": 1.0} and st[0] == {"a": 1.0, "b": 1.0}
    assert math.isclose(lt[4]["a"], 0.899 / 0.501) and math.isclose(st[4]["a"], 0.892 / 0.508)


def test_linear_weights_stay_at_factor_one_and_the_lines_show_them():
    run = {"weights": _records([(1, 0.5), (3, 0.5)])}
    assert all(p == {"a": 1.0, "b": 1.0} for p in trajectory(run))
    rows = [
        {
            "run": "linear-seed0",
            "steps": 400,
            "objectives": ["a", "b"],
            "trajectory": trajectory(run),
            "delta": {"a": -0.1, "b": None},
        }
    ]
    lines = horizon_lines(rows)
    assert lines[2].split() == ["linear-seed0", "400", *["1.000/1.000"] * 5, "-0.100", "—"]
