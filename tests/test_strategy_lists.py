"""The lists of strategies the lab runs and the benchmarks time are read from the weighting classes
(mo_align.lab.catalog): equal, order included, to the lists the lab, bench/run.py and scripts/gpu_check.py
spelled out by hand; a new strategy joins them with no edit there."""

import importlib.util
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from mo_align.lab import catalog, scaling
from mo_align.weightings import WEIGHTINGS, Weighting


ROOT = Path(__file__).resolve().parents[1]

OLD_LAB = {
    "linear": "linear",
    "accuracy_only": "linear",
    "tchebycheff": "tchebycheff",
    "smooth_tchebycheff": "smooth_tchebycheff",
    "lagrangian": "lagrangian",
    "mgda": "mgda",
    "upgrad": "upgrad",
    "dualproj": "dualproj",
    "cagrad": "cagrad",
    "gradnorm": "gradnorm",
    "dynamic": "dynamic",
    "pama": "pama",
    "ctwa": "ctwa",
}
GRAM = "α from each micro-batch's Gram matrix: no state"
OLD_STEP_SIZES = [
    ("ctwa", "lambda_lr", "generation batch", "linear", "ℓ_k += η·max(0, c_k − e_k)·gate: log-weights move η × updates at most"),
    ("lagrangian", "dual_lr", "generation batch", "linear", "λ_k ← max(0, λ_k + η (b_k − R̄_k)): linear until the projection at 0 binds"),
    ("smooth_tchebycheff", "omd_lr", "generation batch", "linear", "logits ℓ_k += η p_k (z_k − R̄_k): mirror-descent steps, linear in η"),
    ("gradnorm", "lr", "optimizer step", "linear", "w_k −= η sign(G_k − target_k) ‖g_k‖, floored and renormalised to Σw = K: the step also scales with the model's gradient norms (not matched) and saturates at the floor"),
    ("dynamic", "regularization", "generation batch", "inverse_lr", "w ← softmax(log w + lr_t Gram·1 / μ): the step is lr_t / μ, so matched sets μ so that Σ_t lr_t / μ is the paper's (same schedule shape); Gram's scale is the model's and not matched"),
    ("tchebycheff", None, "generation batch", "none", "running-max ideal point: state without a step size"),
    ("pama", None, None, "none", "closed-form λ* from each batch: no state"),
    ("mgda", None, None, "none", GRAM),
    ("upgrad", None, None, "none", GRAM),
    ("dualproj", None, None, "none", GRAM),
    ("cagrad", None, None, "none", GRAM),
    ("linear", None, None, "none", "fixed weights"),
]  # fmt: skip
ON_POLICY = ["--weighting", "ctwa", "--weighting-kwargs", '{"statistic": "on_policy"}']
OLD_BENCH = [
    ("linear", [], "baseline", None),
    ("trl GRPOTrainer", ["--trainer", "trl"], "P1", 1.02),
    ("linear (monitor off)", ["--diagnostics", "0"], "P1", 1.02),
    ("tchebycheff", ["--weighting", "tchebycheff"], "P1", 1.02),
    ("smooth_tchebycheff", ["--weighting", "smooth_tchebycheff"], "P1", 1.02),
    ("lagrangian", ["--weighting", "lagrangian"], "P1", 1.02),
    ("pama", ["--weighting", "pama"], "P1", 1.02),
    ("ctwa on_policy", ON_POLICY, "P1", 1.02),
    ("ctwa exact", ["--weighting", "ctwa"], "P2", 1.10),
    ("mgda (parameters)", ["--weighting", "mgda"], "P3", 1.5),
    ("gradnorm (parameters)", ["--weighting", "gradnorm"], "P3", 1.5),
    ("dynamic (parameters)", ["--weighting", "dynamic"], "P3", 1.5),
    ("mgda (logprobs)", ["--weighting", "mgda", "--gramian-space", "logprobs"], "P3", 1.05),
    ("gradnorm (logprobs)", ["--weighting", "gradnorm", "--gramian-space", "logprobs"], "P3", 1.05),
    ("dynamic (logprobs)", ["--weighting", "dynamic", "--gramian-space", "logprobs"], "P3", 1.05),
    ("upgrad (parameters)", ["--weighting", "upgrad"], "P3", 1.5),
    ("dualproj (parameters)", ["--weighting", "dualproj"], "P3", 1.5),
    ("cagrad (parameters)", ["--weighting", "cagrad"], "P3", 1.5),
    ("upgrad (logprobs)", ["--weighting", "upgrad", "--gramian-space", "logprobs"], "P3", 1.05),
    ("dualproj (logprobs)", ["--weighting", "dualproj", "--gramian-space", "logprobs"], "P3", 1.05),
    ("cagrad (logprobs)", ["--weighting", "cagrad", "--gramian-space", "logprobs"], "P3", 1.05),
    ("linear (4 micro-batches)", ["--micro-batches", "4"], "P3", 1.02),
    ("gradnorm (parameters; 4 micro-batches)", ["--weighting", "gradnorm", "--micro-batches", "4"], "P3", 1.5),
    ("dynamic (parameters; 4 micro-batches)", ["--weighting", "dynamic", "--micro-batches", "4"], "P3", 1.5),
    ("linear (again)", [], "baseline", None),
]
OLD_GPU_CHECK = [
    ("linear", "linear", {}, "parameters"),
    ("tchebycheff", "tchebycheff", {}, "parameters"),
    ("smooth_tchebycheff", "smooth_tchebycheff", {}, "parameters"),
    ("lagrangian", "lagrangian", {}, "parameters"),
    ("pama", "pama", {}, "parameters"),
    ("ctwa on_policy", "ctwa", {"statistic": "on_policy"}, "parameters"),
    ("ctwa exact", "ctwa", {}, "parameters"),
    ("mgda (parameters)", "mgda", {}, "parameters"),
    ("gradnorm (parameters)", "gradnorm", {}, "parameters"),
    ("dynamic (parameters)", "dynamic", {}, "parameters"),
    ("mgda (logprobs)", "mgda", {}, "logprobs"),
    ("gradnorm (logprobs)", "gradnorm", {}, "logprobs"),
    ("dynamic (logprobs)", "dynamic", {}, "logprobs"),
]


def _script(path: str):
    spec = importlib.util.spec_from_file_location(f"script_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lab_lists_equal_the_hand_written_ones():
    assert list(scaling.ALGORITHMS.items()) == list(OLD_LAB.items())
    got = [(name, s.kwarg, s.cadence, s.law, s.note) for name, s in scaling.STEP_SIZES.items()]
    assert got == OLD_STEP_SIZES


def test_the_benchmark_lists_equal_the_hand_written_ones():
    assert _script("bench/run.py").CONFIGS == OLD_BENCH
    assert _script("scripts/gpu_check.py").configs() == OLD_GPU_CHECK


class _Plain(Weighting):
    """A new built-in strategy that declares nothing about the lab or the benchmarks."""


class _Gram(Weighting):
    space = "gradient"
    requires = frozenset({"gramian"})
    lab_order = 4.5  # between mgda and upgrad


class _Hidden(Weighting):
    lab_order: ClassVar[float | None] = None


def test_a_new_strategy_joins_every_list_with_no_edit(monkeypatch):
    for key, cls in (("zz_plain", _Plain), ("zz_gram", _Gram), ("zz_hidden", _Hidden)):
        monkeypatch.setitem(WEIGHTINGS, key, cls)
    lab = catalog.lab_strategies()
    assert lab[-1] == "zz_plain" and lab[lab.index("mgda") + 1] == "zz_gram" and "zz_hidden" not in lab
    assert list(catalog.step_sizes())[-2:] == ["zz_gram", "zz_plain"]  # no step-size row: last, in lab order
    names = [t.name for t in catalog.timed_configs()]
    assert names.index("zz_plain") == names.index("ctwa on_policy") + 1  # after the lab's plain ones
    assert names[names.index("mgda (parameters)") + 1] == "zz_gram (parameters)"
    assert names[names.index("mgda (logprobs)") + 1] == "zz_gram (logprobs)"
    assert not any("zz_hidden" in n for n in names)


@pytest.mark.parametrize("key", list(OLD_LAB.values()))
def test_every_lab_strategy_is_a_built_in_class(key):
    assert key in WEIGHTINGS and WEIGHTINGS[key].lab_order is not None
    assert sys.modules[WEIGHTINGS[key].__module__].__name__.startswith("mo_align.weightings.")
