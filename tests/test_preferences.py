"""Preference conditioning without training: per-row scalarization against hand-computed advantages, the statement
in the prompt (system / prefix, the chat template), the sampler's determinism, the recipe block's one-line refusals,
and what the summary and the model card record."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from mo_align.configs import MOGRPOConfig
from mo_align.preferences import PreferenceSampler, parse_block, render, state_preference
from mo_align.preferences.prompt import check_chat_template, check_prompt_kind
from mo_align.preferences.spec import check_objectives
from mo_align.weightings import WEIGHTINGS, ObjectiveStats, get_weighting, weighting_class
from mo_align.weightings.jd import METHODS


# N = 8 rows, G = 4 (two prompts), K = 2. Each column's groups have mean 1 and standard deviation 2 (Bessel), so
# the per-objective GRPO advantages are (r − 1) / (2 + 1e-4):
#   objective 0: [0, 0, 0, 4 | 1, 1, 1, 5]   deviations [-1, -1, -1, 3 | -1, -1, -1, 3]
#   objective 1: [2, 2, 2, -2 | 4, 0, 0, 0]  deviations [1, 1, 1, -3 | 3, -1, -1, -1]
R = torch.tensor([[0, 2], [0, 2], [0, 2], [4, -2], [1, 4], [1, 0], [1, 0], [5, 0]], dtype=torch.float32)
W_A, W_B = [0.75, 0.25], [0.2, 0.8]  # prompt 1's and prompt 2's preference
ROWS = torch.tensor([W_A] * 4 + [W_B] * 4)


def _stats(estimator="grpo", rewards=R):
    lengths = torch.full((len(rewards),), 5.0)
    return ObjectiveStats(rewards=rewards, group_size=4, lengths=lengths, estimator=estimator, scale_rewards="group")


@pytest.mark.parametrize("estimator", ["grpo", "gdpo"])
def test_linear_scores_each_group_with_its_own_preference(estimator):
    # prompt 1 (w = 0.75, 0.25): rows 0-2: 0.75·(-1) + 0.25·1 = -0.5; row 3: 0.75·3 + 0.25·(-3) = 1.5
    # prompt 2 (w = 0.2, 0.8):  row 4: 0.2·(-1) + 0.8·3 = 2.2; rows 5-6: -0.2 - 0.8 = -1.0; row 7: 0.6 - 0.8 = -0.2
    expected = torch.tensor([-0.5, -0.5, -0.5, 1.5, 2.2, -1.0, -1.0, -0.2]) / 2.0001
    adv = get_weighting("linear", 2).combine_rows(_stats(estimator), ROWS)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    swapped = get_weighting("linear", 2).combine_rows(_stats(estimator), ROWS.flip(0))
    assert not torch.allclose(swapped, adv)  # the preference of each group matters
    # the per-row scalar is Σ_k w_ik r_ik: row 3 = 0.75·4 + 0.25·(-2) = 2.5, row 4 = 0.2·1 + 0.8·4 = 3.4
    s = get_weighting("linear", 2).scalarize_rows(R, ROWS)
    assert s[3].item() == pytest.approx(2.5) and s[4].item() == pytest.approx(3.4)


def test_tchebycheff_takes_the_row_preference_in_its_max():
    # s_i = -max_k w_ik (z_k - r_ik) with z = (4, 4):
    #   prompt 1: rows 0-2: max(0.75·4, 0.25·2) = 3 -> -3; row 3: max(0, 0.25·6) = 1.5 -> -1.5
    #             mean -2.625, deviations [-0.375 ×3, 1.125], std sqrt(1.6875 / 3) = 0.75
    #   prompt 2: row 4: max(0.2·3, 0) = 0.6 -> -0.6; rows 5-6: max(0.6, 3.2) -> -3.2; row 7: max(-0.2, 3.2) -> -3.2
    #             mean -2.55, deviations [1.95, -0.65 ×3], std sqrt(5.07 / 3) = 1.3
    weighting = get_weighting("tchebycheff", 2, ideal=[4.0, 4.0])
    expected = torch.tensor([-0.375 / 0.7501] * 3 + [1.125 / 0.7501] + [1.95 / 1.3001] + [-0.65 / 1.3001] * 3)
    torch.testing.assert_close(weighting.combine_rows(_stats(), ROWS), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(weighting.scalarize_rows(R, ROWS)[[0, 3, 4, 7]], torch.tensor([-3, -1.5, -0.6, -3.2]))


def test_smooth_tchebycheff_row_weights_follow_the_accumulated_shortfalls():
    weighting = get_weighting("smooth_tchebycheff", 2, omd_lr=1.0)
    weighting.update(_stats())  # z = (5, 4), R̄ = (1.5, 1): shortfalls D = (3.5, 3)
    a, b = 0.75 * math.exp(0.75 * 3.5), 0.25 * math.exp(0.25 * 3.0)  # w(q) ∝ q · exp(η q ⊙ D)
    w = weighting.row_weights(torch.tensor([W_A]))[0]
    assert w.tolist() == pytest.approx([a / (a + b), b / (a + b)], abs=1e-6)
    # a row whose preference is the strategy's own (uniform) gets the strategy's own weights, after any updates
    weighting.update(_stats(rewards=R.flip(0)))
    own = torch.full((8, 2), 0.5)
    torch.testing.assert_close(weighting.row_weights(own)[0], weighting.weights(), rtol=0, atol=1e-6)
    torch.testing.assert_close(weighting.combine_rows(_stats(), own), weighting.combine(_stats()), rtol=0, atol=1e-5)


def test_the_strategies_that_cannot_take_a_row_preference_are_refused_in_one_line():
    accepted = {name for name in WEIGHTINGS if weighting_class(name).accepts_row_preferences}
    assert accepted == {"linear", "tchebycheff", "smooth_tchebycheff"}
    block = {"template": "P {0:.2f}"}
    for name in sorted(set(WEIGHTINGS) - accepted) + [f"jd:{m}" for m in sorted(METHODS)[:2]]:
        kwargs = {"ctwa": {"cov_targets": 0.5}}.get(name, {})
        with pytest.raises(ValueError) as exc:
            MOGRPOConfig(
                output_dir="x", use_cpu=True, weighting=name, weighting_kwargs=kwargs, preference_conditioning=block
            )
        message = str(exc.value)
        assert message.startswith(f"preference_conditioning: weighting {name!r} cannot be preference-conditioned: ")
        space = weighting_class(name).space
        assert ("gradients" in message) == (space == "gradient") and "\n" not in message and len(message) <= 300


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"template": "x {a}", "sampler": "uniform"}, "preference_conditioning.sampler: 'uniform': one of"),
        ({"template": "x {a}", "alpha": -1}, "preference_conditioning.alpha: -1: a number"),
        ({"template": "x {a}", "sampler": "list"}, "preference_conditioning.preferences: None: a non-empty"),
        ({"template": "x {a}", "sampler": "list", "preferences": [[1, -1]]}, "preferences[0]: [1, -1]: entries"),
        ({"template": "x {a}", "sampler": "grid", "step": 0.3}, "preference_conditioning.step: 0.3: 1/N"),
        ({"template": "x {a}", "sampler": "grid"}, "exactly one of points_per_axis"),
        ({"template": "x {a}", "sampler": "grid", "alpha": 2}, "alpha: is not a parameter of sampler 'grid'"),
        ({"template": "no fields"}, "template: 'no fields' states no preference"),
        ({"template": "x {a"}, "template: 'x {a' is not a format string"),
        ({"template": "x {a}", "placement": "user"}, "placement: 'user': system"),
        ({"template": "x {a}", "colour": 1}, "unknown key(s) 'colour'"),
    ],
)
def test_a_bad_block_is_one_line_naming_the_field(block, message):
    with pytest.raises(ValueError) as exc:
        parse_block(block, weighting_class("linear"), seed=0)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_objective_dependent_checks_name_the_objectives():
    spec = parse_block({"template": "short {short:.1f}, bogus {bogus}", "alpha": [1, 2]}, weighting_class("linear"), 0)
    with pytest.raises(ValueError, match=r"template: field \{bogus\} names no objective; the objectives: short, long"):
        check_objectives(spec, ["short", "long"])
    spec = parse_block({"template": "{short}", "alpha": [1, 2, 3]}, weighting_class("linear"), 0)
    with pytest.raises(ValueError, match=r"alpha: has 3 entries but there are 2 objectives \(short, long\)"):
        check_objectives(spec, ["short", "long"])


def test_the_block_parses_from_a_recipe_and_is_normalised(tmp_path):
    from mo_align.train import parse_args

    recipe = yaml.safe_load(Path("recipes/tiny/linear.yaml").read_text())
    recipe["preference_conditioning"] = {"sampler": "grid", "step": 0.25, "template": "acc {accuracy:.2f}"}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _, args, _ = parse_args(["--config", str(path)])
    assert args.preference_conditioning == {
        "sampler": "grid",
        "points_per_axis": 5,  # step 0.25: 4 steps per edge, 5 points per axis
        "template": "acc {accuracy:.2f}",
        "placement": "system",
        "seed": 0,  # the run's seed
        "eval_preference": None,
    }
    again = parse_block(args.preference_conditioning, weighting_class("linear"), seed=7)  # idempotent
    assert again == args.preference_conditioning


def test_the_sampler_is_a_pure_function_of_seed_and_batch():
    spec = parse_block({"template": "{0}", "alpha": [1.0, 2.0, 0.5]}, weighting_class("linear"), seed=3)
    a, b = PreferenceSampler(spec, 3), PreferenceSampler(spec, 3)
    first = [a.next_batch(5) for _ in range(3)]
    assert a.batches == 3
    b.load_state_dict(a.state_dict())  # a resumed sampler goes on where the first stopped
    assert torch.equal(b.next_batch(5), a.next_batch(5))
    assert torch.equal(PreferenceSampler(spec, 3).draw(1, 5), first[1])  # nothing but (seed, batch) matters
    assert not torch.equal(first[0], first[1])
    for w in first:
        assert w.shape == (5, 3) and (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(5, dtype=w.dtype))
    other = PreferenceSampler({**spec, "seed": 4}, 3)
    assert not torch.equal(other.draw(1, 5), first[1])
    with pytest.raises(ValueError, match="differs from this run's"):
        other.load_state_dict(a.state_dict())


def test_grid_and_list_samplers_draw_only_their_points():
    grid = PreferenceSampler(
        parse_block({"template": "{0}", "sampler": "grid", "points_per_axis": 3}, weighting_class("linear"), 0), 2
    )
    draws = {tuple(w) for w in grid.draw(0, 200).tolist()}
    assert draws == {(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)}  # every grid point drawn, nothing else
    block = {"template": "{0}", "sampler": "list", "preferences": [[3, 1], [0, 2]]}
    listed = PreferenceSampler(parse_block(block, weighting_class("linear"), 0), 2)
    assert {tuple(w) for w in listed.draw(5, 100).tolist()} == {(0.75, 0.25), (0.0, 1.0)}  # normalised


def test_render_by_name_and_position():
    assert render("acc {accuracy:.2f}, len {1:.1f}", ("accuracy", "length"), [0.25, 0.75]) == "acc 0.25, len 0.8"


def test_statement_as_system_message_or_prefix_leaves_the_input_alone():
    prompt = [{"role": "user", "content": "Compute 1 + 1."}]
    system = state_preference(prompt, "Preference: a 0.50", "system")
    assert system == [
        {"role": "system", "content": "Preference: a 0.50"},
        {"role": "user", "content": "Compute 1 + 1."},
    ]
    prefix = state_preference(prompt, "Preference: a 0.50", "prefix")
    assert prefix == [{"role": "user", "content": "Preference: a 0.50\nCompute 1 + 1."}]
    assert prompt == [{"role": "user", "content": "Compute 1 + 1."}]  # not modified
    with_system = [{"role": "system", "content": "Be brief."}, *prompt]
    assert state_preference(with_system, "P", "system")[0] == {"role": "system", "content": "P\nBe brief."}
    assert state_preference("Compute 2 + 2.", "P", "prefix") == "P\nCompute 2 + 2."
    with pytest.raises(ValueError, match="placement system needs conversational prompts"):
        check_prompt_kind("Compute 2 + 2.", "system", "preference_conditioning.placement")


def test_the_chat_template_renders_the_system_statement(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = [{"role": "user", "content": "Compute 1 + 1."}]
    check_chat_template(tok, prompt, "Preference: a 0.50", "here")  # ChatML takes a system message
    text = tok.apply_chat_template(state_preference(prompt, "Preference: a 0.50", "system"), tokenize=False)
    assert text.index("<|im_start|>system\nPreference: a 0.50<|im_end|>") < text.index("<|im_start|>user")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ValueError) as exc:
        check_chat_template(tok, prompt, "Preference: a 0.50", "preference_conditioning.placement")
    assert str(exc.value) == (
        "preference_conditioning.placement: the tokenizer's chat template does not take a system message (System "
        "role not supported); use placement: prefix"
    )
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    with pytest.raises(ValueError, match="drops the system message"):
        check_chat_template(tok, prompt, "Preference: a 0.50", "here")


def test_the_card_says_how_to_ask_for_a_preference_escaped():
    from mo_align.hub import render_model_card

    template = "Pref ``` <b>{accuracy:.2f}</b> | {length:.2f}"
    block = {"sampler": "dirichlet", "alpha": 1.0, "template": template, "placement": "system", "seed": 0}
    block |= {"objectives": ["accuracy", "length"], "column": "mo_preference", "eval_preference": [0.5, 0.5]}
    block["example"] = {
        "preference": {"accuracy": 0.5, "length": 0.5},
        "statement": render(template, ["accuracy", "length"], [0.5, 0.5]),
    }
    summary = {"algorithm": "linear", "objectives": ["accuracy", "length"], "preference_conditioning": block}
    card = render_model_card(summary, "me/model")
    assert "## Asking for a preference" in card
    assert f"````text\n{template}\n````" in card  # a fence longer than the template's backtick run
    assert "````text\nPref ``` <b>0.50</b> | 0.50\n````" in card
    snippet = card.split("````python\n")[1].split("\n````")[0]
    assert f"TEMPLATE = {json.dumps(template)}" in snippet  # a Python string literal of the template
    scope = {}
    exec(snippet.split("\ninputs =")[0], scope)  # the snippet states the preference as the card says
    assert scope["messages"][0] == {"role": "system", "content": "Pref ``` <b>0.50</b> | 0.50"}
    assert "## Asking for a preference" not in render_model_card({**summary, "preference_conditioning": None}, "me/m")


def test_a_checkpoint_with_or_without_conditioning_resumes_only_a_run_like_it():
    from mo_align.trainer.conditioning import Conditioning, load_state

    spec = parse_block({"template": "{a:.2f} {b:.2f}"}, weighting_class("linear"), seed=0)
    conditioned = Conditioning(spec, ("a", "b"))
    conditioned.sampler.next_batch(2)
    saved = conditioned.state_dict()
    with pytest.raises(ValueError, match="the checkpoint was trained with preference_conditioning; this run has none"):
        load_state(None, saved)
    with pytest.raises(ValueError, match="the checkpoint was trained without preference_conditioning"):
        load_state(Conditioning(spec, ("a", "b")), None)
    load_state(None, None)  # neither: nothing to restore
    fresh = Conditioning(spec, ("a", "b"))
    load_state(fresh, saved)
    assert fresh.sampler.batches == 1


def test_train_refuses_a_template_naming_no_objective_before_the_model_loads(tiny_model_dir, tmp_path, capsys):
    from mo_align.train import cli as train_cli

    recipe = yaml.safe_load(Path("recipes/tiny/linear.yaml").read_text())
    recipe.update(model_name_or_path=tiny_model_dir, output_dir=str(tmp_path / "out"))
    recipe["preference_conditioning"] = {"template": "acc {accuracy:.2f}, size {length:.2f}"}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as exc:
        train_cli(["--config", str(path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mo-align: error: {path}: preference_conditioning.template: field {{length}} names no objective; the "
        "objectives: accuracy, conciseness, clarity"
    ]
    assert not (tmp_path / "out").exists()  # refused before anything was written or loaded


def test_a_group_split_across_processes_gets_one_preference_on_both():
    """Two processes, 6 local rows each, G = 4: the global batch holds 3 prompts and prompt 2's rows 4-7 sit on both
    ranks; each rank draws the whole global batch and takes its own rows."""
    from collections import defaultdict
    from types import SimpleNamespace

    from mo_align.trainer.conditioning import Conditioning

    spec = parse_block({"template": "w {a:.3f} {b:.3f}"}, weighting_class("linear"), seed=5)
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(i)} for i in range(6)]
    seen = []
    for rank in (0, 1):
        trainer = SimpleNamespace(
            accelerator=SimpleNamespace(num_processes=2, process_index=rank),
            model=SimpleNamespace(training=True),
            num_generations=4,
            _metrics={"train": defaultdict(list)},
        )
        cond = Conditioning(spec, ("a", "b"))
        out = cond.condition(trainer, rows)
        seen += [row["mo_preference"] for row in out]
        assert [row["prompt"][0]["content"] for row in out] == [
            render(spec["template"], ("a", "b"), w) for w in seen[-6:]
        ]
        assert out[0]["answer"] == "0" and rows[0]["prompt"][0]["role"] == "user"  # input rows untouched
    drawn = PreferenceSampler(spec, 2).draw(0, 3).float().tolist()
    assert seen == [drawn[0]] * 4 + [drawn[1]] * 4 + [drawn[2]] * 4
