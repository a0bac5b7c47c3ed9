"""mo-align sweep: the sweep file's validation, the points it expands to, --print-commands and the Slurm template,
and a sweep killed with SIGKILL mid-run and run again (nothing lost or repeated)."""

import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import pytest
import yaml

from mo_align.process_group import run_group
from mo_align.sweep import SweepError, load_sweep, main, simplex_grid
from mo_align.sweep.run import point_status, run_sweep


ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "max_steps": 4,
    "eval_steps": 4,
    "max_completion_length": 8,
    "per_device_train_batch_size": 8,
    "dataset_kwargs": {"n_train": 64, "n_eval": 8, "seed": 0},
    "disable_tqdm": True,
}


def _recipe(tmp_path: Path, model: str, **extra) -> str:
    recipe = yaml.safe_load((ROOT / "recipes/tiny/linear.yaml").read_text())
    recipe.update(model_name_or_path=model, **extra)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _sweep(tmp_path: Path, body: dict, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_simplex_grid_is_every_lattice_point():
    # oracle: brute force over {0, 1/N, ..., 1}^K, kept when the entries sum to 1
    for k, n in [(2, 4), (3, 2), (3, 3), (4, 2)]:
        brute = {tuple(round(i / n, 4) for i in c) for c in product(range(n + 1), repeat=k) if sum(c) == n}
        grid = simplex_grid(k, n)
        assert len(grid) == len(set(map(tuple, grid))) == math.comb(n + k - 1, k - 1)
        assert set(map(tuple, grid)) == brute
    assert simplex_grid(3, 1) == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_points_cover_the_axes_and_use_each_weightings_preference_field(tmp_path, tiny_model_dir):
    body = {
        "recipe": _recipe(tmp_path, tiny_model_dir),
        "output_dir": str(tmp_path / "out"),
        "preferences": {"grid": 2},
        "algorithms": {
            "linear": None,
            "smooth_tchebycheff": None,
            "ctwa": {"weighting_kwargs": {"cov_targets": [0.15, 0.08, 0.08]}},
            "mgda": None,
            "flat": {"weighting": "linear", "preferences": False},
            "corners": {"weighting": "linear", "preferences": {"grid": 1}},
        },
        "seeds": [0, 1],
        "set": {"learning_rate": [1e-4, 1e-3]},
    }
    sweep = load_sweep(_sweep(tmp_path, body))
    by_label = {}
    for p in sweep.points:
        by_label.setdefault(p.label, []).append(p)
    assert {k: len(v) for k, v in by_label.items()} == {
        "linear": 6 * 2 * 2,
        "smooth_tchebycheff": 24,
        "ctwa": 24,
        "mgda": 4,  # no preference vector: once per seed and learning rate
        "flat": 4,
        "corners": 3 * 2 * 2,  # its own axis: the simplex's vertices
    }
    st = by_label["smooth_tchebycheff"][0]
    assert st.weighting_kwargs == {"preference": st.preference} and sum(st.preference) == 1.0
    ctwa = next(p for p in by_label["ctwa"] if p.preference == [0.5, 0.0, 0.5])
    assert ctwa.weighting_kwargs == {"cov_targets": [0.15, 0.08, 0.08], "weights": [0.5, 0.0, 0.5]}
    assert by_label["linear"][0].name == "linear-w1_0_0-learning_rate=0.0001-seed0"
    assert by_label["flat"][0].weighting_kwargs == {"weights": [0.333, 0.333, 0.334]}  # the recipe's own
    assert any("mgda" in n and "no preference" in n for n in sweep.notes)
    assert len({p.name for p in sweep.points}) == len(sweep.points)


def test_dirichlet_preferences_are_seeded_simplex_points(tmp_path, tiny_model_dir):
    body = {"recipe": _recipe(tmp_path, tiny_model_dir), "output_dir": str(tmp_path / "o")}
    body["preferences"] = {"dirichlet": {"n": 5, "seed": 3}}
    a, b = load_sweep(_sweep(tmp_path, body)), load_sweep(_sweep(tmp_path, body, "again.yaml"))
    prefs = [p.preference for p in a.points]
    assert prefs == [p.preference for p in b.points] and len({tuple(x) for x in prefs}) == 5
    assert all(len(w) == 3 and min(w) >= 0 and abs(sum(w) - 1) < 1e-3 for w in prefs)


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"algoritms": ["linear"]}, "algoritms", "unknown key"),
        ({"preferences": {"grid": 0}}, "preferences.grid", "[1, 100]"),
        ({"preferences": {"grid": 2.5}}, "preferences.grid", "integer"),
        ({"preferences": [[0.5, 0.5]]}, "preferences[0]", "list of 3 numbers"),
        ({"preferences": [[1, -1, 1]]}, "preferences[0]", ">= 0"),
        ({"preferences": {"dirichlet": {"n": 3, "sed": 1}}}, "preferences.dirichlet", "unknown key"),
        ({"algorithms": ["nope"]}, "algorithms.nope", "unknown weighting"),
        ({"algorithms": {"ctwa": {"weighting_kwargs": {"lambda": 1}}}}, "algorithms.ctwa", "lambda"),
        ({"algorithms": {"linear": {"prefs": False}}}, "algorithms.linear", "unknown key"),
        ({"algorithms": {"linear": {"preferences": [[1, 0]]}}}, "algorithms.linear: preferences[0]", "3 numbers"),
        ({"set": {"learning_rat": [1e-3]}}, "set.learning_rat", "not a recipe field"),
        ({"set": {"learning_rate": 1e-3}}, "set.learning_rate", "non-empty list"),
        ({"set": {"seed": [1, 2]}}, "set.seed", "use the sweep's seeds"),
        ({"overrides": {"output_dir": "x"}}, "overrides.output_dir", "not settable"),
        ({"seeds": [0, 0]}, "seeds", "repeated"),
        ({"set": {"num_generations": [3]}}, "point linear-num_generations=3-seed0", "num_generations"),
        ({"recipe": "missing.yaml"}, "recipe", "no such file"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_file_and_field(tmp_path, tiny_model_dir, change, field, says, capsys):
    body = {"recipe": _recipe(tmp_path, tiny_model_dir), "output_dir": str(tmp_path / "out"), **change}
    path = _sweep(tmp_path, body)
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}:") and says in message and "\n" not in message
    assert main([path]) == 2  # the CLI: the same line, nothing run
    err = capsys.readouterr().err
    assert err.startswith("mo-align: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_print_commands_writes_self_contained_recipes_and_slurm_runs_the_right_line(tmp_path, tiny_model_dir):
    body = {
        "recipe": _recipe(tmp_path, tiny_model_dir),
        "output_dir": str(tmp_path / "out"),
        "preferences": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "accelerate_config": "cpu",
    }
    path = _sweep(tmp_path, body)
    out = subprocess.run(
        [sys.executable, "-m", "mo_align.cli", "sweep", path, "--print-commands"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert len(lines) == 3
    for line, w in zip(lines, body["preferences"], strict=True):
        name = f"linear-w{w[0]}_{w[1]}_{w[2]}-seed0"
        recipe = tmp_path / "out" / "recipes" / f"{name}.yaml"
        cfg = ROOT / "mo_align/resources/configs/accelerate/cpu.yaml"  # package data (configs/ links here)
        assert line == f"accelerate launch --config_file {cfg} -m mo_align.train --config {recipe}"
        written = yaml.safe_load(recipe.read_text())
        assert written["weighting_kwargs"] == {"weights": w} and written["output_dir"] == str(tmp_path / "out" / name)
        assert written["run_name"] == name and written["mo_run_label"] == "linear"
    assert os.listdir(tmp_path / "out") == ["recipes"]  # the recipes in one folder, no point directory
    # the Slurm template runs line $SLURM_ARRAY_TASK_ID; a fake `accelerate` on PATH records what it was given
    commands = tmp_path / "commands.txt"
    commands.write_text(out)
    fake = tmp_path / "bin" / "accelerate"
    fake.parent.mkdir()
    fake.write_text('#!/bin/bash\necho "ARGS $*" > "$FAKE_OUT"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    for task in (1, 3):
        env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": str(task)}
        env["FAKE_OUT"] = str(tmp_path / f"ran{task}")
        subprocess.run(["bash", str(ROOT / "scripts/slurm_sweep.sbatch"), str(commands)], env=env, check=True)
        ran = (tmp_path / f"ran{task}").read_text().split()
        assert ran[:4] == ["ARGS", "launch", "--main_process_port", str(29500 + task)]
        assert ran[4:] == lines[task - 1].split()[2:]
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "4"}
    bad = subprocess.run(
        ["bash", str(ROOT / "scripts/slurm_sweep.sbatch"), str(commands)], env=env, text=True, capture_output=True
    )
    assert bad.returncode == 2 and "has no line 4 (3 lines)" in bad.stderr


@pytest.mark.parametrize(
    ("named", "expected"),
    [(None, {"True": "cpu", "False": "ddp"}), ("ddp", {"True": "ddp", "False": "ddp"}), ("--cpu", None)],
)
def test_print_commands_launches_a_use_cpu_point_with_the_cpu_config(
    tmp_path, tiny_model_dir, capsys, named, expected
):
    """Without an accelerate_config in the sweep file, a point whose recipe says use_cpu: true launches with the
    one-process cpu config (not ddp's 4 ranks); one named in the file, or by --accelerate-config, wins."""
    body = {"recipe": _recipe(tmp_path, tiny_model_dir), "output_dir": str(tmp_path / "out")}
    body["set"] = {"use_cpu": [True, False]}  # no preference axis: two points
    if named and not named.startswith("--"):
        body["accelerate_config"] = named
    argv = [_sweep(tmp_path, body), "--print-commands"] + (["--accelerate-config", "cpu"] if named == "--cpu" else [])
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    configs = ROOT / "mo_align/resources/configs/accelerate"
    for line in lines:
        recipe = yaml.safe_load(Path(line.split(" --config ")[1]).read_text())
        want = (expected or {"True": "cpu", "False": "cpu"})[str(recipe["use_cpu"])]
        assert line.split()[3] == str(configs / f"{want}.yaml"), line


def test_sweep_children_progress_reaches_the_console(tmp_path, tiny_model_dir):
    """A fake point writes its progress file (as its trainer would) and ends once the sweep printed it."""
    body = {"recipe": _recipe(tmp_path, tiny_model_dir), "output_dir": str(tmp_path / "out")}
    sweep = load_sweep(_sweep(tmp_path, body | {"preferences": [[1, 0, 0], [0, 1, 0]]}))
    said = []

    def fake_run(sweep, point, threads):
        path = Path(sweep.output_dir) / "logs" / f"{point.name}.progress"
        path.write_text(json.dumps({"step": 4, "max_steps": 8, "elapsed": 100.0}))
        end = time.monotonic() + 60  # a safeguard against a hang, not an assertion on time
        while not any(m.startswith(f"{point.name} step") for m in list(said)) and time.monotonic() < end:
            time.sleep(0.01)
        return point, 0, 1.0

    (tmp_path / "out" / "logs").mkdir(parents=True)
    result = run_sweep(sweep, 1, say=said.append, run=fake_run, poll=0.01)
    assert {r["rc"] for r in result.values()} == {0}
    for point in sweep.points:
        assert said.index(f"{point.name} step 4/8 (eta 1m40s)") < said.index(f"{point.name}: ok in 1 s")


def _wait_for(predicate, timeout: float, proc) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow  # about 2 minutes on 2 busy cores: three training processes
def test_a_sweep_killed_with_sigkill_and_run_again_loses_and_repeats_nothing(tmp_path, tiny_model_dir):
    body = {
        "recipe": _recipe(tmp_path, tiny_model_dir, **SMALL),
        "output_dir": str(tmp_path / "out"),
        "preferences": [[1, 0, 0], [0, 0.5, 0.5]],
        "overrides": {"save_strategy": "steps", "save_steps": 1, "max_steps": 6, "eval_steps": 6},
    }
    path = _sweep(tmp_path, body)
    first, second = (tmp_path / "out" / n for n in ("linear-w1_0_0-seed0", "linear-w0_0.5_0.5-seed0"))
    cmd = [sys.executable, "-m", "mo_align.cli", "sweep", path, "--jobs", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(lambda: (second / "checkpoint-2" / "mo_complete.json").exists(), 240, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its training process, as `kill -9 -PGID` does
    proc.wait()
    assert point_status(str(first)) == "done" and point_status(str(second)) == "resume"
    complete = sorted(
        int(c.name.split("-")[1]) for c in second.glob("checkpoint-*") if (c / "mo_complete.json").exists()
    )
    kept = {f: (first / f).stat().st_mtime_ns for f in ("mo_summary.json", "model.safetensors", "sweep_done.json")}
    summary_before = (first / "mo_summary.json").read_text()

    rerun = run_group(cmd, 300, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 finished, 1 to run" in rerun.stdout
    # the finished point was not run again: its files untouched, one launch in its log
    assert {f: (first / f).stat().st_mtime_ns for f in kept} == kept
    assert (first / "mo_summary.json").read_text() == summary_before
    assert (tmp_path / "out/logs" / f"{first.name}.log").read_text().count("==== ") == 1
    # the killed one resumed from its newest complete checkpoint and went on to step 6, every step exactly once
    log = (tmp_path / "out/logs" / f"{second.name}.log").read_text()
    assert log.count("==== ") == 2
    assert f"resuming from {second}/checkpoint-{complete[-1]}" in log.split("==== ")[2]
    summary = json.loads((second / "mo_summary.json").read_text())
    assert [e["step"] for e in summary["train_reward"]] == [1, 2, 3, 4, 5, 6]
    evals = [e["step"] for e in summary["eval"]]  # (eval_on_start evaluates again where a run resumes)
    assert evals[0] == 0 and evals[-1] == 6 and len(set(evals)) == len(evals) and set(evals) <= {0, *complete, 6}
    state = json.loads((second / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert point_status(str(second)) == "done"


def test_the_docs_fronts_example_sweep_is_valid_and_shown_verbatim():
    path = ROOT / "sweeps/tiny-front.yaml"
    sweep = load_sweep(str(path))
    counts = {}
    for p in sweep.points:
        counts[p.label] = counts.get(p.label, 0) + 1
    assert counts == {"linear": 6 * 2 * 2, "ctwa": 24, "upgrad": 1 * 2 * 2, "mgda": 2 * 2}
    upgrad = next(p for p in sweep.points if p.label == "upgrad")
    assert upgrad.weighting_kwargs == {"pref_vector": [0.5, 0.25, 0.25]}
    body = path.read_text().splitlines()[1:]
    page = (ROOT / "docs" / "fronts.md").read_text()  # the sweep example moved there from the README
    assert "\n".join(body) in page


def test_an_algorithm_may_start_from_its_own_recipe(tmp_path, tiny_model_dir):
    """``algorithms.<label>.recipe``: the points of that algorithm are its recipe (estimator, kwargs, every field)
    plus the sweep's overrides and axes; a recipe of other objectives or a missing one is one line."""
    own = yaml.safe_load((ROOT / "recipes/tiny/ctwa.yaml").read_text())
    own.update(model_name_or_path=tiny_model_dir, learning_rate=2e-4)
    (tmp_path / "ctwa.yaml").write_text(yaml.safe_dump(own))
    body = {"recipe": _recipe(tmp_path, tiny_model_dir), "output_dir": str(tmp_path / "out"), "seeds": [0]}
    body["algorithms"] = {"linear": None, "ctwa": {"recipe": str(tmp_path / "ctwa.yaml")}}
    body["preferences"] = [[0.5, 0.25, 0.25]]
    body["overrides"] = {"max_steps": 3}
    from mo_align.sweep.spec import point_recipe

    sweep = load_sweep(_sweep(tmp_path, body))
    points = {p.label: p for p in sweep.points}
    ctwa, linear = point_recipe(sweep, points["ctwa"]), point_recipe(sweep, points["linear"])
    assert ctwa["advantage_estimator"] == "reinforce_pp" and ctwa["learning_rate"] == 2e-4 and ctwa["max_steps"] == 3
    assert ctwa["weighting_kwargs"] == {**own["weighting_kwargs"], "weights": [0.5, 0.25, 0.25]}
    assert linear["advantage_estimator"] == "grpo" and linear["learning_rate"] == 5e-4
    assert sweep.base_recipe(points["ctwa"])[0] == str(tmp_path / "ctwa.yaml")
    other = {**own, "reward_funcs": ["accuracy", "conciseness"]}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(other))
    for recipe, says in (("two.yaml", "scores ['accuracy', 'conciseness']"), ("none.yaml", "no such recipe file")):
        body["algorithms"]["ctwa"] = {"recipe": str(tmp_path / recipe)}
        with pytest.raises(SweepError, match=r"algorithms\.ctwa\.recipe: .*" + re.escape(says)) as info:
            load_sweep(_sweep(tmp_path, body))
        assert "\n" not in str(info.value)


def test_sweep_files_carry_no_weighting_hyperparameter_that_differs_from_the_recipes():
    """A weighting kwarg written in a sweep file is the value of that weighting's recipe beside the base recipe (or
    of its own ``recipe``): the recipes stay the one source of the hyperparameters."""
    checked = 0
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        folder = (ROOT / raw["recipe"]).parent
        algorithms = raw.get("algorithms") or {}
        for label, spec in algorithms.items() if isinstance(algorithms, dict) else []:
            spec = spec or {}
            recipe = ROOT / spec["recipe"] if "recipe" in spec else folder / f"{spec.get('weighting', label)}.yaml"
            kwargs = yaml.safe_load(recipe.read_text())["weighting_kwargs"]
            for key, value in (spec.get("weighting_kwargs") or {}).items():
                assert kwargs.get(key) == value, f"{path.name}: algorithms.{label}.{key} differs from {recipe}"
                checked += 1
    assert checked >= 1  # sweeps/tiny-front.yaml's CTWA cov_targets
