"""Install footprint (issue 12 item 11): a small core, one extra per optional feature, every import declared, and a
one-line error naming the extra when a feature's package is missing."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
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
