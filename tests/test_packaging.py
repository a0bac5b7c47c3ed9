"""Install footprint: a small core, one extra per optional feature, every import declared, and a
one-line error naming the extra when a feature's package is missing."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import pathlib
import re

import pytest

from mo_align import extras
from mo_align import train as train_mod
from tests.test_cli import tiny_recipe


ROOT = pathlib.Path(__file__).resolve().parents[1]
OPTIONAL = {"deepspeed": "deepspeed", "wandb": "wandb", "trackio": "trackio", "torchjd": "torchjd"}
# the solvers TorchJD's weightings call (its own optional extras): UPGrad/DualProj, CAGrad, FairGrad
SOLVERS = {"torchjd": {"quadprog", "qpsolvers", "cvxpy", "clarabel", "scipy"}}


def _names(block: str) -> set[str]:
    return {
        re.split(r"[=<>!~\[ ;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for line in block.strip().splitlines()
        if line.strip() and not line.strip().startswith("#")
    }


@pytest.fixture(scope="module")
def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    core = _names(cfg["options"]["install_requires"])
    extra = {name: _names(value) for name, value in cfg["options.extras_require"].items()}
    return core, extra


def test_optional_features_are_extras_and_make_install_installs_them(setup_cfg):
    core, extra = setup_cfg
    for dist, name in OPTIONAL.items():
        assert dist not in core, f"{dist} is a hard requirement"
        assert extra[name] == {dist} | SOLVERS.get(name, set())
        assert extra[name] <= extra["all"]
        assert dist in extra["all"]
    assert extra["quantization"] == {"bitsandbytes"}
    assert "-e '.[dev,all]'" in (ROOT / "Makefile").read_text()


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_declared(setup_cfg):
    core, extra = setup_cfg
    declared = core | set().union(*extra.values())
    dists = importlib.metadata.packages_distributions()
    imported = set().union(*(_imports(p) for p in (ROOT / "mo_align").rglob("*.py")))
    # vllm: only imported inside vLLM's own processes (mo_align.vllm.shm_engine, in .venv-vllm; see scripts/vllm_env.sh)
    third_party = {m for m in imported if m in dists and m != "mo_align"} - {"vllm"}
    missing = {m: dists[m] for m in third_party if not {d.lower().replace("_", "-") for d in dists[m]} & declared}
    assert not missing, f"imported but not declared in setup.cfg: {missing}"
    assert "requests" in core


@pytest.mark.parametrize(
    ("flags", "env", "missing", "message"),
    [
        (
            ["--report_to", "wandb"],
            {},
            "wandb",
            "report_to: wandb needs the 'wandb' package: pip install 'mo_align[wandb]'",
        ),
        (["--report_to", "trackio"], {}, "trackio", "pip install 'mo_align[trackio]'"),
        ([], {"ACCELERATE_USE_DEEPSPEED": "true"}, "deepspeed", "pip install 'mo_align[deepspeed]'"),
    ],
)
def test_missing_extra_is_one_line_naming_it(
    tmp_path, tiny_model_dir, monkeypatch, capsys, flags, env, missing, message
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(extras, "is_installed", lambda module: module != missing)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", tiny_recipe(tmp_path, tiny_model_dir), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mo-align: error: ") and message in err[-1], err[-1]


def _requirements(block: str) -> dict[str, str]:
    reqs = {}
    for line in block.strip().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name = re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0]
            reqs[name.lower().replace("_", "-")] = line[len(name) :].strip()
    return reqs


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints-cpu.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_install_requires_are_ranges_from_the_tested_version_and_the_constraints_pin_them():
    """Users get compatible ranges; the exact tested set lives in constraints-cpu.txt. TRL alone is exact (the
    trainer overrides its private hooks); every other lower bound is the version the constraints file pins."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    pins = _constraints()
    blocks = [cfg["options"]["install_requires"]] + [
        v for k, v in cfg["options.extras_require"].items() if k != "quantization"
    ]
    for block in blocks:
        for name, spec in _requirements(block).items():
            assert name in pins, f"{name} is not pinned in constraints-cpu.txt"
            if name == "trl":
                assert spec == f"=={pins[name]}"
                continue
            assert "==" not in spec, f"{name}{spec}: an exact pin in setup.cfg"
            lower = re.search(r">=([0-9.]+)", spec)
            assert lower and re.search(r"<[0-9]", spec), f"{name}{spec}: needs a lower and an upper bound"
            tested = [int(x) for x in pins[name].split("+")[0].split(".")]
            bound = [int(x) for x in lower.group(1).split(".")]
            assert bound <= tested[: len(bound)], f"{name}: lower bound {bound} above the tested {pins[name]}"
            assert tested[: len(bound)] == bound, f"{name}: lower bound {bound} is not the tested {pins[name]}"


def test_the_wheel_carries_every_launch_config_and_the_card_template(tmp_path):
    """A non-editable install resolves `--accelerate_config NAME` from package data (built from the tracked files,
    as a user's `pip install .` would)."""
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to(os.readlink(ROOT / name))
        elif (ROOT / name).is_file():
            target.write_bytes((ROOT / name).read_bytes())
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*build, str(src)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("mo_align-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = ROOT / "mo_align" / "resources" / "configs"
    expected = {f"mo_align/resources/configs/{p.relative_to(configs)}" for p in configs.rglob("*") if p.is_file()}
    assert {"mo_align/resources/configs/accelerate/cpu.yaml", "mo_align/resources/configs/deepspeed/zero3.json"} <= (
        expected
    )
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "mo_align/hub/model_card.md" in names
