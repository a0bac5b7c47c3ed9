"""bench/gram_fidelity.py (``make bench-gram``): its core on the tiny model keeps the invariants of the comparison, and
a subset's Gram matrix is the full one restricted to the subset's coordinates (hand-checked on a 2-parameter toy)."""

import json
import math
import os
import sys
import types

import pytest
import torch


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import gram_core
import gram_fidelity
import gram_report


class Toy(torch.nn.Module):
    """Two scalar parameters named as two decoder layers: a = model.layers.0.w = 1, b = model.layers.1.w = 2."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
        self.model.layers[0].w = torch.nn.Parameter(torch.tensor(1.0))
        self.model.layers[1].w = torch.nn.Parameter(torch.tensor(2.0))


def test_subset_gram_is_the_full_gram_restricted_by_hand():
    toy = Toy()
    logps = torch.stack([toy.model.layers[0].w * 1.0, toy.model.layers[1].w * 1.0])  # per-token log-probs (a, b)
    losses = [3 * logps[0] + 2 * logps[1], logps[0] * logps[1]]  # g_1 = (3, 2), g_2 = (b, a) = (2, 1)
    trainer = types.SimpleNamespace(args=types.SimpleNamespace(gramian_space="parameters", gramian_params=None))
    accelerator = types.SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x)
    spaces = {gram_core.FULL: ("parameters", None), "a": ("parameters", gram_core.layer_regex([0])),
              "b": ("parameters", gram_core.layer_regex([1])), "logprobs": ("logprobs", None)}  # fmt: skip
    rows = gram_core.space_rows(trainer, toy, losses, logps, spaces)
    loss_vec = torch.stack([x.detach() for x in losses])
    grams = {n: gram_core.gram_of(rows[n], loss_vec, spaces[n][0], accelerator).tolist() for n in spaces}
    assert grams[gram_core.FULL] == [[13.0, 8.0], [8.0, 5.0]]  # <g_i, g_j> over (a, b)
    assert grams["a"] == [[9.0, 6.0], [6.0, 4.0]]  # over a only: 3·3, 3·2, 2·2
    assert grams["b"] == [[4.0, 2.0], [2.0, 1.0]]  # over b only: 2·2, 2·1, 1·1
    assert grams["logprobs"] == [[13.0, 8.0], [8.0, 5.0]]  # the same gradients w.r.t. the two log-probs
    assert trainer.args.gramian_params is None and trainer.args.gramian_space == "parameters"  # restored


def test_spaces_keep_the_relative_depth_of_layers_10_to_25_of_28():
    assert gram_core.gram_spaces(28)["layers 10-25 of 28 scaled (10-25)"][1] == gram_core.layer_regex(range(10, 26))
    assert list(gram_core.gram_spaces(6)) == [gram_core.FULL, "last layer (5)", "last quarter (4-5)",
                                              "layers 10-25 of 28 scaled (2-5)", gram_core.LOGPROBS]  # fmt: skip


def _rewards():
    """Three rewards of the token ids, so a random model's completions differ on each."""

    def mean_id(completion_ids, **kw):
        return [sum(c) / (384.0 * max(1, len(c))) for c in completion_ids]

    def even_share(completion_ids, **kw):
        return [sum(t % 2 == 0 for t in c) / max(1, len(c)) for c in completion_ids]

    def first_mod5(completion_ids, **kw):
        return [float(c[0] % 5) if c else 0.0 for c in completion_ids]

    return [mean_id, even_share, first_mod5]


@pytest.fixture(scope="module")
def tiny_results(tiny_model_dir, tmp_path_factory):
    from datasets import Dataset

    from mo_align.lab.scaling import lab_settings

    out = str(tmp_path_factory.mktemp("bench-gram") / "gram")
    settings = lab_settings("mgda", 1, output_dir=str(tmp_path_factory.mktemp("run")))
    settings.update(steps_per_generation=1, per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
                    eval_strategy="no", eval_on_start=False)  # fmt: skip
    prompts = [[{"role": "user", "content": f"Compute {i} + 1."}] for i in range(16)]
    data = Dataset.from_dict({"prompt": prompts, "answer": [str(i + 1) for i in range(16)]})
    spec = {"label": "tiny", "path": tiny_model_dir, "settings": settings, "funcs": _rewards(), "data": data}
    a = gram_fidelity.parse(["--batches", "2", "--time-steps", "1", "--out", out])
    strategies = {s: lab_settings(s, 1)["weighting_kwargs"] for s in a.strategies}
    result = gram_fidelity.run_model(spec, a, strategies)
    meta = {"date": "-", "loadavg_before": "-", "loadavg_after": "-", "threads": 1, "command": "-",
            "threshold": a.threshold, "machine": "-"}  # fmt: skip
    text = gram_fidelity.write_results([result], meta, strategies, out)
    with open(out + ".json") as f:
        return result, {**json.load(f), "_path": out + ".json"}, text


def test_full_parameter_row_is_exact_and_cosines_are_cosines(tiny_results):
    result, _, _ = tiny_results
    for record in result["batches"]:
        assert all(s > 0 for s in record["reward_std"])  # every objective carries signal: a real comparison
        for s in gram_core.STRATEGIES:
            full = record[s][gram_core.FULL]
            assert full["cos"] == 1.0 and full["alpha_maxabs"] == 0.0  # exactly, not approximately
            for n, row in record[s].items():
                assert -1.0 <= row["cos"] <= 1.0, (s, n, row["cos"])
                assert row["alpha_maxabs"] >= 0.0 and math.isfinite(row["alpha_maxabs"])
        for n in result["spaces"]:
            assert record["spaces"][n]["corr_delta"] >= 0.0
        assert record["spaces"][gram_core.FULL]["corr_delta"] == 0.0


def test_alphas_lie_where_each_strategy_puts_them(tiny_results):
    result, _, _ = tiny_results
    for record in result["batches"]:
        for n in result["spaces"]:
            for s in ("mgda", "dynamic"):  # the simplex: MGDA's min-norm point, Dynamic's softmax weights
                alpha = record[s][n]["alpha"]
                assert min(alpha) >= 0.0 and sum(alpha) == pytest.approx(1.0, abs=1e-6), (s, n, alpha)
            assert min(record["upgrad"][n]["alpha"]) >= 0.0  # UPGrad: non-negative (not normalised)
            gradnorm = record["gradnorm"][n]["alpha"]  # weights floored at min_weight, summing to K
            assert min(gradnorm) >= 1e-3 and sum(gradnorm) == pytest.approx(3.0, abs=1e-6)


def test_results_json_has_every_strategy_and_space(tiny_results):
    result, doc, text = tiny_results
    (model,) = doc["models"]
    pairs = {(r["strategy"], r["space"]) for r in model["rows"]}
    assert pairs == {(s, n) for s in gram_core.STRATEGIES for n in result["spaces"]}
    assert len(model["rows"]) == len(gram_core.STRATEGIES) * 5
    for r in model["rows"]:
        assert r["time_s"] > 0 and r["x_linear_train"] > 0
        if r["space"] == gram_core.FULL:
            assert r["cos"]["mean"] == 1.0 and r["alpha_maxabs"]["mean"] == 0.0
    assert model["linear_s"] > 0 and "## Recommendation" in text
    assert text.count("| mgda |") == 5
    again = os.path.join(os.path.dirname(doc["_path"]), "again")
    gram_fidelity.main(["--render", doc["_path"], "--out", again])  # the tables again from the run's JSON
    with open(again + ".md") as f:
        assert f.read() == text


def _row(space, cos_low, time_s, step_low=None):
    row = {"strategy": "s", "space": space, "time_s": time_s, "x_linear_train": time_s,
           "cos": {"mean": cos_low, "low": cos_low, "high": 1.0, "n": 8, "of": 8}}  # fmt: skip
    if step_low is not None:
        row["cos_weight_step"] = {"mean": step_low, "low": step_low, "high": 1.0, "n": 8, "of": 8}
        row["weight_step_ratio"] = {"mean": 0.5, "low": 0.4, "high": 0.6, "n": 8, "of": 8}
    return row


def test_recommendation_takes_the_cheapest_faithful_space_that_is_faster_than_every_parameter():
    rows = [_row(gram_core.FULL, 1.0, 2.0), _row("slow but faithful", 0.999, 2.5), _row("cheap", 0.95, 1.0),
            _row("mid", 0.995, 1.5)]  # fmt: skip
    (line,) = gram_report.recommend([{"rows": rows}], 0.99)
    assert line.startswith("- **s**: mid — cos(d, d_full) 0.995")
    (line,) = gram_report.recommend(
        [{"rows": rows[:3]}], 0.99
    )  # the faithful one measured slower than every parameter
    assert line.startswith(
        "- **s**: parameters (all) (2.00x) — no faster space reaches cos >= 0.99; the closest, cheap"
    )
    stateful = [_row(gram_core.FULL, 1.0, 2.0, 1.0), _row("direction off", 1.0, 1.0, 0.5)]
    (line,) = gram_report.recommend([{"rows": stateful}], 0.99)  # cos(d) = 1, but its weight step points elsewhere
    assert line.startswith("- **s**: parameters (all) (2.00x) — no faster space reaches cos >= 0.99")


def test_with_two_models_a_space_is_recommended_only_where_it_holds_on_both():
    """Two lab checkpoints: "mid" is faithful on the first only, "cheap" on both; the figures are per model."""
    first = [_row(gram_core.FULL, 1.0, 2.0), _row("cheap", 0.995, 1.0), _row("mid", 0.999, 1.5)]
    second = [_row(gram_core.FULL, 1.0, 3.0), _row("cheap", 0.992, 1.2), _row("mid", 0.90, 2.0)]
    (line,) = gram_report.recommend([{"rows": first}, {"rows": second}], 0.99)
    assert line.startswith(
        "- **s**: cheap — cos(d, d_full) 0.995 [0.995, 1.000] / 0.992 [0.992, 1.000] at 1.00 / 1.20x"
    )
    second[1]["cos"]["low"] = 0.98  # now nothing cheaper holds on the second model
    (line,) = gram_report.recommend([{"rows": first}, {"rows": second}], 0.99)
    assert line.startswith("- **s**: parameters (all) (2.00 / 3.00x) — no faster space reaches cos >= 0.99")
    second[1]["time_s"] = 3.5  # and "cheap" no longer saves time on the second: not a candidate at all
    (line,) = gram_report.recommend([{"rows": first}, {"rows": second}], 0.99)
    assert "the closest, mid" in line


def test_the_busy_label_discounts_the_benchs_own_threads():
    """Before the run the load is the others'; after, it includes the bench's own threads (2 on 2 cores)."""
    assert not gram_report.busy_load("0.40 0.9 1.0 1/150 7", 2)
    assert gram_report.busy_load("1.50 0.9 1.0 1/150 7", 2)  # someone else used more than one core before
    assert not gram_report.busy_load("2.07 1.96 1.62 3/150 9", 2, own=2)  # the bench alone
    assert gram_report.busy_load("3.40 3.1 2.9 5/160 9", 2, own=2)  # the bench plus more than a core of others
    assert not gram_report.busy_load("unavailable", 2)
