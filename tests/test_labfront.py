"""make lab-front's pipeline (lab warm start, sweep, soup of the corner runs, report with fronts) on a tiny budget,
its one-line refusal of an algorithm the checkout lacks, and the conditioned policy's rows: their recipes, chat
template, evaluation command, report grouping and the paired HV comparisons on hand-made fronts."""

import argparse
import dataclasses
import json
import warnings

import numpy as np
import pytest
import yaml
from transformers import AutoTokenizer

from mo_align.lab.run import lab_datasets
from mo_align.lab.scaling import lab_config
from mo_align.lab.sft import _chat
from mo_align.lab.task import MODEL_CONFIG
from mo_align.preferences.evaluate import add_parser
from mo_align.preferences.front import parse_preferences, point_name
from mo_align.preferences.prompt import check_chat_template, check_prompt_kind, state_preference
from mo_align.preferences.spec import render
from mo_align.runs.report.fronts import empirical_fronts
from mo_align.runs.summary import load_runs
from mo_align.sweep import labfront, load_sweep
from mo_align.sweep.labfront_conditioned import ROWS, declared, eval_command
from mo_align.sweep.labfront_paired import compare, comparison_table, hv_table, seed_hypervolumes
from mo_align.sweep.spec import point_recipe
from mo_align.testing import CHAT_TEMPLATE
from mo_align.train import parse_args
from mo_align.weightings import WEIGHTINGS


def test_a_missing_algorithm_is_refused_in_one_line():
    with pytest.raises(SystemExit, match=r"unknown algorithm\(s\) \['nope'\]"):
        labfront.check_algorithms(["linear", "nope"])
    if "upgrad" in WEIGHTINGS:  # the TorchJD family is merged: UPGrad is available and takes a pref_vector
        labfront.check_algorithms(list(labfront.ALGORITHMS))
    else:
        with pytest.raises(SystemExit) as info:
            labfront.check_algorithms(list(labfront.ALGORITHMS))
        message = str(info.value)
        assert "weighting 'upgrad' is not available" in message and "--algorithms linear ctwa soup" in message
        assert "\n" not in message


@pytest.mark.slow  # about 2 minutes on 2 cores: a short warm start, 5 + 2 two-step runs, 6 soup evaluations
def test_lab_front_writes_fronts_for_linear_ctwa_and_the_soup(tmp_path):
    out = tmp_path / "front"
    argv = ["--out", str(out), "--cache", str(tmp_path / "cache"), "--steps", "2", "--sft-steps", "5", "--seeds", "0"]
    labfront.main([*argv, "--eval-prompts", "16", "--algorithms", "linear", "ctwa", "soup"])
    report = json.loads((out / "report/report.json").read_text())
    fronts = report["fronts"]
    assert {a: len(f["points"]) for a, f in fronts.items()} == {"linear": 5, "ctwa": 2, "soup": 6}
    assert all(f["hypervolume"] is not None and f["front"] for f in fronts.values())
    soup = json.loads((out / "soup/seed0/soup.json").read_text())
    assert all(
        p.endswith(f"linear-w{w}-seed0") for p, w in zip(soup["runs"], ["1_0_0", "0_1_0", "0_0_1"], strict=True)
    )
    table = (out / "front.md").read_text()
    assert "`make lab-front`" in table and "| soup | 6 |" in table and "| ctwa | 2 |" in table
    assert (out / "report/fronts.png").stat().st_size > 1000


def test_lab_front_points_are_lab_runs_with_no_settings_of_their_own(tmp_path):
    """Each point of the lab-front sweep trains exactly what a lab run of its algorithm trains (the recipe under the
    lab's scaling rule, --eta included), except the sweep's own harness (resume, eval schedule), its name, seed and
    preference; nothing is written, nothing trained."""
    import argparse
    import dataclasses
    import warnings

    from mo_align.lab.scaling import lab_config, lab_settings
    from mo_align.sweep import load_sweep
    from mo_align.sweep.spec import point_recipe
    from mo_align.train import parse_args

    (tmp_path / "data").mkdir()
    args = argparse.Namespace(
        out=str(tmp_path), algorithms=["linear", "ctwa", "soup"], seeds=[0], steps=12, eta="matched"
    )
    sweep = load_sweep(labfront.write_sweep_file(args, "sft-dir", str(tmp_path / "data"), {"reference_length": 21.0}))
    assert sorted({p.label for p in sweep.points}) == ["ctwa", "linear"]
    own = {"output_dir", "run_name", "seed", "eval_steps", "save_strategy", "save_steps", "save_total_limit"}
    for point in sweep.points:
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(point_recipe(sweep, point)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, got, _ = parse_args(["--config", str(tmp_path / "p.yaml")])
        want = lab_config(point.label, 12, "matched", output_dir="x", seed=point.seed)
        diff = {f.name for f in dataclasses.fields(got) if getattr(got, f.name) != getattr(want, f.name)}
        assert diff - own <= {"weighting_kwargs"}, point.name
        pref = "weights"  # linear's and CTWA's preference field: their (initial) weights
        assert {**got.weighting_kwargs, pref: None} == {**want.weighting_kwargs, pref: None}
        assert got.weighting_kwargs[pref] == point.preference
    ctwa = lab_settings("ctwa", 12, "matched")
    assert ctwa["weighting_kwargs"]["lambda_lr"] == pytest.approx(0.05 * 810 / 6)  # 12 steps = 6 batches
    assert (
        ctwa["weighting_kwargs"]["obj_targets"] == [1.0, 0.95, 0.95] and ctwa["advantage_estimator"] == "reinforce_pp"
    )


# ---- the conditioned policy: recipes, evaluation command, report grouping, paired HV table ----
CONDITIONED_BLOCK = {
    "sampler": "dirichlet",
    "alpha": 1.0,
    "template": "Preference: accuracy {accuracy:.2f}, conciseness {conciseness:.2f}, clarity {clarity:.2f}",
    "placement": "system",
}


def test_the_conditioned_rows_are_the_linear_lab_run_with_only_the_declared_fields_changed(tmp_path):
    """Both conditioned rows train exactly the Linear lab run, except the sweep's harness and naming, the declared
    conditioning block and, for the same-compute row, max_steps = steps × the Linear sweep's 5 points; nothing is
    trained."""
    (tmp_path / "data").mkdir()
    args = argparse.Namespace(
        out=str(tmp_path), algorithms=["linear", "conditioned"], seeds=[0, 1], steps=12, eta="matched"
    )
    sweep = load_sweep(labfront.write_sweep_file(args, "sft-dir", str(tmp_path / "data"), {"reference_length": 21.0}))
    rows = [p for p in sweep.points if p.label in ROWS]
    assert [(p.label, p.seed, p.preference) for p in rows] == [
        ("conditioned-same-compute", 0, None),
        ("conditioned-same-compute", 1, None),
        ("conditioned-same-steps", 0, None),
        ("conditioned-same-steps", 1, None),
    ]
    assert sweep.points[:2] == rows[:2]  # the longest runs start first
    changes = declared(12, 5, ["accuracy", "conciseness", "clarity"])
    assert changes["changes"] == {
        "conditioned-same-steps": ["preference_conditioning"],
        "conditioned-same-compute": ["preference_conditioning", "max_steps"],
    }
    assert changes["max_steps"] == {"conditioned-same-compute": 60, "conditioned-same-steps": 12}
    assert changes["preference_conditioning"] == CONDITIONED_BLOCK
    own = {"output_dir", "run_name", "mo_run_label", "seed", "eval_steps", "save_strategy", "save_steps"}
    own.add("save_total_limit")
    for point in rows:
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(point_recipe(sweep, point)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, got, _ = parse_args(["--config", str(tmp_path / "p.yaml")])
        want = lab_config("linear", 12, "matched", output_dir="x", seed=point.seed)
        diff = {f.name for f in dataclasses.fields(got) if getattr(got, f.name) != getattr(want, f.name)}
        assert diff - own == set(changes["changes"][point.label]), point.name
        assert got.weighting == "linear" and got.weighting_kwargs == want.weighting_kwargs
        assert got.preference_conditioning == {**CONDITIONED_BLOCK, "seed": point.seed, "eval_preference": None}
        assert got.max_steps == changes["max_steps"][point.label]
        assert got.eval_steps == got.max_steps and got.save_steps == got.max_steps // 2  # evaluated at start and end


def test_the_lab_chat_template_takes_the_statement_as_a_system_message(tiny_model_dir):
    """The lab's warm start writes make_tiny_model's tokenizer (ChatML): a system message is rendered, so the
    conditioned rows state the preference with placement system; the stated prompt is the warm start's SFT prompt
    with a system turn before it, and fits the lab model's positions with a full completion."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template == CHAT_TEMPLATE
    prompt = lab_datasets()[0][0]["prompt"]
    statement = render(CONDITIONED_BLOCK["template"], ["accuracy", "conciseness", "clarity"], [0.5, 0.25, 0.25])
    assert statement == "Preference: accuracy 0.50, conciseness 0.25, clarity 0.25"
    check_prompt_kind(prompt, "system", "preference_conditioning.placement")
    check_chat_template(tok, prompt, statement, "preference_conditioning.placement")  # refuses a template without
    stated = state_preference(prompt, statement, "system")
    rendered = tok.apply_chat_template(stated, tokenize=False, add_generation_prompt=True)
    assert rendered == f"<|im_start|>system\n{statement}<|im_end|>\n" + _chat(tok, prompt[0]["content"])
    assert len(tok(rendered)["input_ids"]) + 64 <= MODEL_CONFIG["max_position_embeddings"]  # 64: completion cap


def test_the_conditioned_runs_are_evaluated_at_the_linear_sweeps_points():
    cmd = eval_command("runs/conditioned-same-steps-seed0", labfront.CORNERS + labfront.INTERIOR, "OUT/p", "0,0,0")
    assert cmd[1:4] == ["-m", "mo_align.cli", "evaluate-preferences"]
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(cmd[3:])
    assert (args.run, args.out, args.reference) == ("runs/conditioned-same-steps-seed0", "OUT/p", "0,0,0")
    prefs = parse_preferences(args.preferences, 3)
    assert np.allclose(prefs, labfront.CORNERS + labfront.INTERIOR, rtol=0, atol=1e-12)
    assert [point_name(w) for w in prefs][3:] == ["pref-w0.5_0.25_0.25", "pref-w0.334_0.333_0.333"]


def _summary(directory, name, algorithm, final, hyperparameters):
    directory.mkdir(parents=True)
    body = {"run_name": name, "algorithm": algorithm, "objectives": ["accuracy", "conciseness", "clarity"]}
    body.update(final=final, weighting_hyperparameters=hyperparameters)
    (directory / "mo_summary.json").write_text(json.dumps(body))
    return str(directory)


def test_soup_and_conditioned_points_of_each_seed_are_one_report_point(tmp_path):
    """Soup and evaluate-preferences points carry no -seed<s> and their hyperparameters name their seed's runs, so the
    report would show every seed as a point of its own; lab-front names them <point>-seed<s> (in memory) and the
    fronts group them, with the conditioned row as its algorithm."""
    objectives = ["accuracy", "conciseness", "clarity"]
    entries = []
    for seed, x in ((0, 0.2), (1, 0.4)):
        final = {"accuracy": x, "conciseness": 0.5, "clarity": 0.5}
        soup = tmp_path / f"soup/seed{seed}/soup-a1_0_0"
        entries.append(("soup", seed, _summary(soup, "soup-a1_0_0", "soup", final, {"runs": [f"r{seed}"]})))
        run = f"conditioned-same-steps-seed{seed}"
        pref = tmp_path / f"preferences/{run}/pref-w1_0_0"
        hp = {"run": run, "preference": [1.0, 0.0, 0.0]}
        entries.append(
            ("conditioned-same-steps", seed, _summary(pref, f"{run}-pref-w1_0_0", "same-conditioned", final, hp))
        )
    raw = load_runs([path for _, _, path in entries])  # as mo-align report reads them
    assert {a: len(f["points"]) for a, f in empirical_fronts(raw, objectives, [0, 0, 0]).items()} == {
        "soup": 2,
        "same-conditioned": 2,
    }
    runs = [labfront._tagged(front, seed, path, True) for front, seed, path in entries]
    assert [r["run_name"] for r in runs[:2]] == ["soup-a1_0_0-seed0", "conditioned-same-steps-pref-w1_0_0-seed0"]
    fronts = empirical_fronts(runs, objectives, [0, 0, 0])
    assert list(fronts) == ["soup", "conditioned-same-steps"]
    for front in fronts.values():
        (point,) = front["points"].values()
        assert point["seeds"] == 2 and point["mean"]["accuracy"] == pytest.approx(0.3)
    verdict = labfront._verdict(runs, entries, objectives)
    assert verdict["expected"] == {"soup": 6, "conditioned-same-steps": 5}
    assert verdict["hv"] == {"soup": {0: None, 1: None}, "conditioned-same-steps": {0: None, 1: None}}  # 1 point
    assert [(r["front"], r["against"], r["n"], r["verdict"]) for r in verdict["comparisons"]] == [
        ("conditioned-same-steps", "soup", 0, "n < 2")
    ]


def _hand_made_hv():
    """Two objectives, reference (0, 0): HV of one point = its product; of (0.6, 0.5) and (0.8, 0.2) = 0.30 + 0.16 −
    0.6 · 0.2 = 0.34; a dominated point adds nothing. Seed 3: the Linear point has no accuracy (NaN) and the soup
    none at all, so seed 3 has no Linear or soup HV."""
    nan = float("nan")
    points = {
        "conditioned-same-steps": {
            0: [[0.6, 0.5], [0.3, 0.3]],
            1: [[0.8, 0.4]],
            2: [[0.6, 0.5], [0.8, 0.2]],
            3: [[0.9, 0.9]],
        },
        "linear": {0: [[0.5, 0.4]], 1: [[0.4, 0.5]], 2: [[0.5, 0.4], [0.2, 0.3]], 3: [[nan, 0.5]]},
        "soup": {0: [[0.7, 0.5]], 1: [[0.9, 0.3]], 2: [[0.62, 0.5]], 3: []},
    }
    return seed_hypervolumes(points, {"conditioned-same-steps": 1, "linear": 1, "soup": 1}, [0.0, 0.0])


def test_seed_hypervolumes_of_hand_made_fronts():
    hv = _hand_made_hv()
    assert hv["conditioned-same-steps"] == pytest.approx({0: 0.30, 1: 0.32, 2: 0.34, 3: 0.81})
    assert {s: v for s, v in hv["linear"].items() if v is not None} == pytest.approx({0: 0.2, 1: 0.2, 2: 0.2})
    assert {s: v for s, v in hv["soup"].items() if v is not None} == pytest.approx({0: 0.35, 1: 0.27, 2: 0.31})
    assert hv["linear"][3] is None and hv["soup"][3] is None
    two = seed_hypervolumes({"linear": {0: [[0.5, 0.4]], 1: [[0.5, 0.4], [0.2, 0.3]]}}, {"linear": 2}, [0.0, 0.0])
    assert two == {"linear": {0: None, 1: pytest.approx(0.2)}}  # seed 0 lacks a point


def test_paired_hv_differences_with_holm_adjusted_t_intervals():
    """Per-seed ΔHV, conditioned − Linear: 0.10, 0.12, 0.14 (mean 0.12, s = 0.02, se = 0.02/√3 = 0.011547, t =
    10.392); conditioned − soup: −0.05, 0.05, 0.03 (mean 0.01, s = 0.052915, se = 0.030551, t = 0.32733). With 2
    degrees of freedom P(|T| ≥ t) = 1 − t/√(2 + t²): p = 0.0091326 and 0.77451, and the quantile t_q = (2q − 1) /
    √(2q(1 − q)): t_0.975 = 4.30265, t_0.9875 = 6.20535. Holm over the 2 tests: 0.0091326 ≤ 0.05/2, so the first
    interval is at 97.5 % (0.12 ± 6.20535 · 0.011547 = [0.04835, 0.19165]), adjusted p = 2 · 0.0091326; 0.77451 >
    0.05/1 stops, so the second is at 95 % (0.01 ± 4.30265 · 0.030551 = [−0.12145, 0.14145]), adjusted p 0.77451.
    Seed 3 has no Linear or soup HV and is left out."""
    hv = _hand_made_hv()
    pairs = [("conditioned-same-steps", "linear"), ("conditioned-same-steps", "soup"), ("conditioned-x", "linear")]
    first, second = compare(hv, pairs)  # a front not in hv: no row
    assert first["per_seed"] == pytest.approx({0: 0.10, 1: 0.12, 2: 0.14})
    assert second["per_seed"] == pytest.approx({0: -0.05, 1: 0.05, 2: 0.03})
    assert (first["n"], second["n"]) == (3, 3)
    assert first["estimate"] == pytest.approx(0.12) and second["estimate"] == pytest.approx(0.01)
    assert (first["low"], first["high"]) == pytest.approx((0.0483468, 0.1916532), abs=1e-6)
    assert (second["low"], second["high"]) == pytest.approx((-0.1214482, 0.1414482), abs=1e-6)
    assert (first["level"], second["level"]) == pytest.approx((0.975, 0.95))
    assert (first["p"], second["p"]) == pytest.approx((0.0091326, 0.7745062), abs=1e-6)
    assert (first["p_holm"], second["p_holm"]) == pytest.approx((0.0182652, 0.7745062), abs=1e-6)
    assert (first["verdict"], second["verdict"]) == ("better", "not significant")
    table = comparison_table([first, second])
    assert "| conditioned, same steps − Linear sweep | 3 | 0: +0.1000, 1: +0.1200, 2: +0.1400 |" in table
    assert "+0.120 [+0.048, +0.192] | 97.5 % | 0.00913 | 0.0183 | better |" in table
    assert "over the 2 comparison(s) of this table" in table
    worse = compare({"a": {0: 0.1, 1: 0.1, 2: 0.2}, "b": {0: 0.3, 1: 0.4, 2: 0.4}}, [("a", "b")])[0]
    assert worse["verdict"] == "worse" and worse["estimate"] == pytest.approx(-0.7 / 3)
    lines = hv_table(hv, [0, 1, 2, 3], {"linear": 1}).splitlines()
    assert (
        lines[2] == "| conditioned, same steps | — | 0.3000 | 0.3200 | 0.3400 | 0.8100 | 0.4425 |"
    )  # (0.30 + 0.32 + 0.34 + 0.81) / 4
    assert lines[3] == "| Linear sweep | 1 | 0.2000 | 0.2000 | 0.2000 | — | 0.2000 |"
