"""mo-align soup: θ(α) = Σ α_i θ_i checked against torch arithmetic on the runs' safetensors, α = e_1 reproduces the
first run's final evaluation, LoRA (merged and adapter interpolation) against ΔW = s·B·A computed by hand, and the
one-line refusals of runs that cannot be mixed."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from mo_align.soup import SoupError, check_runs, main, parse_alphas, soup_model
from mo_align.sweep import load_sweep
from mo_align.sweep.run import write_recipe
from mo_align.train import cli as train_cli


ROOT = Path(__file__).resolve().parents[1]
LORA = {
    "use_peft": True,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "lora_target_modules": ["q_proj", "v_proj"],
}


def _train_pair(root: Path, model: str, **extra) -> list[str]:
    """Two finished runs of one base, trained in this process from sweep points (preferences e_1 and e_2)."""
    recipe = yaml.safe_load((ROOT / "recipes/tiny/linear.yaml").read_text())
    recipe.update(
        model_name_or_path=model,
        reward_funcs=["tests.helpers.reward_vowels", "tests.helpers.reward_short"],
        weighting_kwargs={"weights": [0.5, 0.5]},
        dataset_kwargs={"n_train": 32, "n_eval": 8, "seed": 0},
        max_steps=2,
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        max_completion_length=12,
        disable_tqdm=True,
        **extra,
    )
    root.mkdir(parents=True)
    (root / "base.yaml").write_text(yaml.safe_dump(recipe))
    body = {"recipe": str(root / "base.yaml"), "output_dir": str(root / "out"), "preferences": [[1, 0], [0, 1]]}
    (root / "sweep.yaml").write_text(yaml.safe_dump(body))
    sweep = load_sweep(str(root / "sweep.yaml"))
    for point in sweep.points:
        train_cli(["--config", write_recipe(sweep, point)])
    return [sweep.point_dir(p) for p in sweep.points]


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory, tiny_model_dir):
    return _train_pair(tmp_path_factory.mktemp("soup") / "full", tiny_model_dir)


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, tiny_model_dir):
    return _train_pair(tmp_path_factory.mktemp("soup") / "lora", tiny_model_dir, **LORA)


def test_full_weight_soup_is_the_interpolation_of_the_safetensors(full_runs):
    a, b = (load_file(str(Path(r) / "model.safetensors")) for r in full_runs)
    assert any(not torch.equal(a[k], b[k]) for k in a), "the two runs did not diverge"
    theta = soup_model(full_runs, [0.3, 0.7]).state_dict()
    for key in a:  # oracle: torch arithmetic on the two files
        torch.testing.assert_close(theta[key], 0.3 * a[key] + 0.7 * b[key], rtol=0, atol=2e-7)
    exact = soup_model(full_runs, [1.0, 0.0]).state_dict()
    assert all(torch.equal(exact[k], a[k]) for k in a)


def test_alpha_e1_reproduces_the_first_runs_final_evaluation(full_runs, tmp_path, capsys):
    out = tmp_path / "soup"
    assert main([*full_runs, "--alphas", "1,0.5,0", "--out", str(out)]) == 0
    run_a, run_b = (json.loads((Path(r) / "mo_summary.json").read_text()) for r in full_runs)
    first = json.loads((out / "soup-a1_0/mo_summary.json").read_text())
    assert first["algorithm"] == "soup" and first["weighting_hyperparameters"]["alphas"] == [1.0, 0.0]
    assert first["weighting_hyperparameters"]["reward_state"].endswith("checkpoint-2/mo_state.pt")
    assert first["final"] == run_a["final"] and first["eval"][-1]["ci"] == run_a["eval"][-1]["ci"]
    last = json.loads((out / "soup-a0_1/mo_summary.json").read_text())
    assert last["final"] == run_b["final"] or last["final"] != run_a["final"]  # e_2 is run B's model
    table = json.loads((out / "soup.json").read_text())
    assert [p["alphas"] for p in table["points"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    stamp = (out / "soup-a0.5_0.5/mo_summary.json").stat().st_mtime_ns
    assert main([*full_runs, "--alphas", "0.5", "--out", str(out)]) == 0  # evaluated once, not again
    assert (out / "soup-a0.5_0.5/mo_summary.json").stat().st_mtime_ns == stamp


def _lora_delta(run: str, scale: float) -> dict[str, torch.Tensor]:
    """ΔW = (lora_alpha / r) · B · A per target module, by hand from the adapter file (module name -> ΔW)."""
    sd = load_file(str(Path(run) / "adapter_model.safetensors"))
    out = {}
    for key, a in sd.items():
        if key.endswith("lora_A.weight"):
            module = key[len("base_model.model.") : -len(".lora_A.weight")]
            out[module] = scale * sd[key.replace("lora_A", "lora_B")] @ a
    return out


def test_lora_soups_against_hand_computed_adapter_algebra(lora_runs, tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    da, db = _lora_delta(lora_runs[0], 8 / 4), _lora_delta(lora_runs[1], 8 / 4)
    assert set(da) == set(db) and da and any(not torch.equal(da[m], db[m]) for m in da)
    merged = soup_model(lora_runs, [0.25, 0.75], "merged").state_dict()
    for module in da:  # θ_0 + Σ α_i ΔW_i
        expected = base[module + ".weight"] + 0.25 * da[module] + 0.75 * db[module]
        torch.testing.assert_close(merged[module + ".weight"], expected, rtol=0, atol=1e-6)
    untouched = [k for k in base if k.removesuffix(".weight") not in da]
    assert untouched and all(torch.equal(merged[k], base[k]) for k in untouched)
    sa, sb = (load_file(str(Path(r) / "adapter_model.safetensors")) for r in lora_runs)
    adapters = soup_model(lora_runs, [0.25, 0.75], "adapters").state_dict()
    for module in da:  # θ_0 + s (Σ α_i B_i)(Σ α_i A_i): not linear in the ΔW_i
        key = f"base_model.model.{module}.lora_"
        mixed_b = 0.25 * sa[key + "B.weight"] + 0.75 * sb[key + "B.weight"]
        mixed_a = 0.25 * sa[key + "A.weight"] + 0.75 * sb[key + "A.weight"]
        expected = base[module + ".weight"] + 2.0 * mixed_b @ mixed_a
        torch.testing.assert_close(adapters[module + ".weight"], expected, rtol=0, atol=1e-6)


def _copy(run: str, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


def test_runs_that_cannot_be_mixed_are_refused_naming_them(full_runs, lora_runs, tmp_path, capsys):
    a = full_runs[0]
    arch = _copy(full_runs[1], tmp_path, "arch")
    config = json.loads((arch / "config.json").read_text())
    (arch / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"]}))
    base = _copy(full_runs[1], tmp_path, "base")
    recipe = yaml.safe_load((base / "sweep_recipe.yaml").read_text())
    (base / "sweep_recipe.yaml").write_text(yaml.safe_dump({**recipe, "model_name_or_path": "Qwen/Qwen2.5-0.5B"}))
    tok = _copy(full_runs[1], tmp_path, "tok")
    tokenizer = json.loads((tok / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [*tokenizer["added_tokens"], {**tokenizer["added_tokens"][-1], "id": 9999}]
    (tok / "tokenizer.json").write_text(json.dumps(tokenizer))
    lora_base = _copy(lora_runs[1], tmp_path, "lora_base")
    adapter = json.loads((lora_base / "adapter_config.json").read_text())
    (lora_base / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": "other"}))
    lora_rank = _copy(lora_runs[1], tmp_path, "lora_rank")
    (lora_rank / "adapter_config.json").write_text(json.dumps({**adapter, "r": 8}))
    cases = [
        ([a, str(arch)], "merged", "different architectures"),
        ([a, str(base)], "merged", "different base models"),
        ([a, str(tok)], "merged", "different tokenizers"),
        ([a, lora_runs[0]], "merged", "different kinds of weights"),
        ([lora_runs[0], str(lora_base)], "merged", "different base models"),
        ([lora_runs[0], str(lora_rank)], "adapters", "different LoRA configurations"),
    ]
    for runs, mode, says in cases:
        with pytest.raises(SoupError) as info:
            check_runs(runs, mode)
        message = str(info.value)
        assert says in message and all(r in message for r in runs) and "\n" not in message
    check_runs([lora_runs[0], str(lora_rank)], "merged")  # merged weights mix any two adapters of one base
    assert main([a, str(arch), "--alphas", "0.5", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mo-align: error: the runs have different architectures") and err.count("\n") == 1


def test_alphas():
    assert parse_alphas("0,0.25,1", 2) == [[0.0, 1.0], [0.25, 0.75], [1.0, 0.0]]
    assert parse_alphas("grid:2", 3)[:3] == [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]]
    for text, runs, says in [
        ("1.5", 2, "[0, 1]"),
        ("x", 2, "comma-separated"),
        ("0.5", 3, "grid:N"),
        ("grid:0", 3, "[1, 100]"),
    ]:
        with pytest.raises(SoupError, match=says.replace("[", r"\[").replace("]", r"\]")):
            parse_alphas(text, runs)


# ---- bad weight files: one line naming the run, the file and the tensor ------------------------------------------
def _edited_copy(run: str, tmp_path: Path, name: str, edit) -> Path:
    """A copy of ``run`` whose model.safetensors is rewritten by ``edit(state_dict)``."""
    from safetensors.torch import save_file

    copy = _copy(run, tmp_path, name)
    weights = copy / "model.safetensors"
    state = load_file(str(weights))
    edit(state)
    save_file(state, str(weights), metadata={"format": "pt"})
    return copy


def _soup_cli(runs, tmp_path, capsys) -> tuple[int, list[str]]:
    from mo_align.cli import main as cli

    rc = cli(["soup", *map(str, runs), "--alphas", "0.5", "--out", str(tmp_path / "soup-out")])
    return rc, capsys.readouterr().err.splitlines()


def test_a_nan_tensor_is_refused_naming_run_file_and_tensor(full_runs, tmp_path, capsys):
    key = next(k for k, v in load_file(str(Path(full_runs[1]) / "model.safetensors")).items() if v.ndim == 2)

    def poison(state):
        state[key] = state[key].clone()
        state[key][0, 1] = float("nan")

    bad = _edited_copy(full_runs[1], tmp_path, "nan-run", poison)
    rc, err = _soup_cli([full_runs[0], bad], tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and len(err[0]) <= 300, err
    assert str(bad / "model.safetensors") in err[0] and key in err[0] and "non-finite" in err[0]
    assert not (tmp_path / "soup-out" / "soup-a0.5_0.5").exists()  # refused before any model was built


def test_the_interpolated_weights_are_checked_finite(full_runs):
    from mo_align.soup.interpolate import check_finite

    a = load_file(str(Path(full_runs[0]) / "model.safetensors"))
    mixed = {k: v.clone() for k, v in a.items()}
    check_finite(mixed, "the soup")  # finite: passes
    key = next(k for k, v in mixed.items() if v.is_floating_point())
    mixed[key].view(-1)[3] = float("inf")
    with pytest.raises(SoupError, match=f"the soup: tensor {key} holds 1 non-finite value"):
        check_finite(mixed, "the soup")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_weight_files_are_refused_in_one_line(full_runs, tmp_path, capsys, damage):
    bad = _copy(full_runs[1], tmp_path, damage)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(range(256)) * 64)
    rc, err = _soup_cli([full_runs[0], bad], tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and len(err[0]) <= 300, err
    assert err[0].startswith(f"mo-align: error: {weights}: not a readable safetensors file")


def test_a_shape_mismatch_is_one_short_line_counting_the_tensors(full_runs, tmp_path, capsys):
    state = load_file(str(Path(full_runs[1]) / "model.safetensors"))
    matrices = sorted(k for k, v in state.items() if v.ndim == 2)[:3]

    def shrink(state):
        for key in matrices:
            state[key] = state[key][:-1].clone()  # one row fewer

    bad = _edited_copy(full_runs[1], tmp_path, "shapes", shrink)
    rows, cols = state[matrices[0]].shape
    rc, err = _soup_cli([full_runs[0], bad], tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and len(err[0]) <= 300, (len(err[0]), err)
    assert f"3 tensors differ in shape, first: {matrices[0]} ({rows}, {cols}) vs ({rows - 1}, {cols})" in err[0]
    assert full_runs[0] in err[0] and str(bad) in err[0]

    def rename(state):
        state["extra.weight"] = torch.zeros(2)

    renamed = _edited_copy(full_runs[1], tmp_path, "names", rename)
    rc, err = _soup_cli([full_runs[0], renamed], tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and len(err[0]) <= 300, err
    assert "1 tensor only in" in err[0] and "extra.weight" in err[0]


def test_the_soup_trainer_is_the_recipes_and_a_recipe_without_eval_split_is_one_line(full_runs, tmp_path):
    from mo_align.soup.evaluate import build_trainer

    recipe = Path(full_runs[0]) / "sweep_recipe.yaml"
    trainer = build_trainer(full_runs[0], str(recipe), full_runs[0], str(tmp_path / "o"), "soup-x")
    args = trainer.args
    assert (args.output_dir, args.run_name, args.mo_run_label, args.report_to) == (
        str(tmp_path / "o"),
        "soup-x",
        "soup",
        [],
    )
    assert list(trainer.mo.objective_names) == ["reward_vowels", "reward_short"] and trainer.eval_dataset is not None
    no_eval = tmp_path / "no_eval.yaml"
    body = {**yaml.safe_load(recipe.read_text()), "eval_strategy": "no"}
    body.pop("eval_split")
    no_eval.write_text(yaml.safe_dump(body))
    with pytest.raises(ValueError) as info:
        build_trainer(full_runs[0], str(no_eval), full_runs[0], str(tmp_path / "o2"), "soup-y")
    assert str(info.value) == f"{no_eval}: no eval split (set eval_strategy and eval_split): a soup is measured on it"
