"""The TorchJD adapters (mo_align.weightings.jd) against TorchJD itself: the same α as TorchJD's own ``Weighting`` on
the same Gram matrices (K = 2…5, full-rank and rank-deficient, sequences for the stateful and random methods),
exact resume through a checkpoint round trip, ranks that agree, and one-line errors naming the field."""

from __future__ import annotations

import copy
import inspect
import io
import logging

import pytest
import torch
import torchjd.aggregation as tja

from mo_align.extras import MissingExtraError
from mo_align.weightings import WEIGHTINGS, get_weighting, weighting_class
from mo_align.weightings.jd import METHODS, NOT_GRAMIAN, REGISTERED, JDWeighting
from mo_align.weightings.mgda import MGDAWeighting
from mo_align.weightings.validation import check_number, validate_kwargs


def _gram(k: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(k, rank, generator=g, dtype=torch.float64) * torch.rand(k, 1, generator=g, dtype=torch.float64)
    return jac @ jac.T


def _pref(k: int) -> list[float]:
    return [float(i + 1) for i in range(k)]


def _projector(norm_eps: float = 1e-4, reg_eps: float = 1e-4):
    from torchjd.linalg import QuadprogProjector

    return QuadprogProjector(norm_eps=norm_eps, reg_eps=reg_eps)


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# (method, mo_align kwargs for K objectives, TorchJD's own weighting built independently from the same arguments)
CASES = [
    ("UPGrad", lambda k: {}, lambda k: tja.UPGradWeighting()),
    (
        "UPGrad",
        lambda k: {"pref_vector": _pref(k), "norm_eps": 1e-6, "reg_eps": 1e-3},
        lambda k: tja.UPGradWeighting(_t(_pref(k)), projector=_projector(1e-6, 1e-3)),
    ),
    ("DualProj", lambda k: {}, lambda k: tja.DualProjWeighting()),
    ("DualProj", lambda k: {"pref_vector": _pref(k)}, lambda k: tja.DualProjWeighting(_t(_pref(k)))),
    ("CAGrad", lambda k: {}, lambda k: tja.CAGradWeighting(c=0.4)),
    ("CAGrad", lambda k: {"c": 0.8, "norm_eps": 1e-3}, lambda k: tja.CAGradWeighting(c=0.8, norm_eps=1e-3)),
    ("IMTLG", lambda k: {}, lambda k: tja.IMTLGWeighting()),
    ("AlignedMTL", lambda k: {}, lambda k: tja.AlignedMTLWeighting()),
    ("AlignedMTL", lambda k: {"scale_mode": "rmse"}, lambda k: tja.AlignedMTLWeighting(scale_mode="rmse")),
    ("PCGrad", lambda k: {"seed": 3}, lambda k: tja.PCGradWeighting()),
    ("GradVac", lambda k: {"beta": 0.9, "seed": 3}, lambda k: tja.GradVacWeighting(beta=0.9)),
    ("FairGrad", lambda k: {"alpha": 2.0}, lambda k: tja.FairGradWeighting(alpha=2.0)),
    ("MoDo", lambda k: {"gamma": 0.5}, lambda k: tja.MoDoWeighting(gamma=0.5)),
    ("SDMGrad", lambda k: {}, lambda k: tja.SDMGradWeighting()),
    (
        "SDMGrad",
        lambda k: {"lambda_": 1.0, "pref_vector": _pref(k)},
        lambda k: tja.SDMGradWeighting(lambda_=1.0, pref_vector=_t(_pref(k))),
    ),
    ("MGDA", lambda k: {}, lambda k: tja.MGDAWeighting()),
    ("Mean", lambda k: {}, lambda k: tja.MeanWeighting()),
    ("Sum", lambda k: {}, lambda k: tja.SumWeighting()),
    ("Constant", lambda k: {"weights": _pref(k)}, lambda k: tja.ConstantWeighting(_t(_pref(k)))),
    ("Random", lambda k: {"seed": 3}, lambda k: tja.RandomWeighting()),
    ("Krum", lambda k: {"n_byzantine": 0}, lambda k: tja.KrumWeighting(n_byzantine=0)),
    ("PCD", lambda k: {}, lambda k: tja.PCDWeighting()),
    ("PCD", lambda k: {"tau": 0.3, "beta": 0.5}, lambda k: tja.PCDWeighting(tau=0.3, beta=0.5)),
    ("CRMOGM", lambda k: {}, lambda k: tja.CRMOGMWeighting(tja.UPGradWeighting())),
    (
        "CRMOGM",
        lambda k: {"weighting": "PCGrad", "weighting_kwargs": {"seed": 3}, "alpha": 0.5},
        lambda k: tja.CRMOGMWeighting(tja.PCGradWeighting(), alpha=0.5),
    ),
]


def test_every_gramian_weighting_of_torchjd_is_covered():
    """Every ``*Weighting`` TorchJD 0.18 exports is an adapter here, and every aggregator without one is refused."""
    exported = {n.removesuffix("Weighting") for n in tja.__all__ if n.endswith("Weighting") and n != "Weighting"}
    assert exported == set(METHODS) | {"ExcessMTL"}  # ExcessMTL weighs the Jacobian itself, not its Gram matrix
    bases = {"Aggregator", "GramianWeightedAggregator", "WeightedAggregator"}
    aggregators = {n for n in tja.__all__ if not n.endswith("Weighting")} - bases
    assert aggregators - set(METHODS) == set(NOT_GRAMIAN)
    assert sorted(REGISTERED) == ["aligned_mtl", "cagrad", "dualproj", "imtlg", "pcgrad", "upgrad"]
    assert {case[0] for case in CASES} == set(METHODS)


# Krum needs K >= n_byzantine + 3 (its refusal below K = 3: test_errors_name_the_field)
EQUAL = [(*case, k) for case in CASES for k in (2, 3, 5) if not (case[0] == "Krum" and k < 3)]


@pytest.mark.parametrize(
    ("method", "ours", "theirs", "k"), EQUAL, ids=[f"{c[0]}-{i}-K{c[3]}" for i, c in enumerate(EQUAL)]
)
def test_weights_equal_torchjd(method, ours, theirs, k):
    """Three successive Gram matrices (rank 1, rank K − 1 and full rank): α is TorchJD's, bit for bit; the random
    methods draw from a stream seeded like ``torch.manual_seed(seed)``."""
    strategy = get_weighting(f"jd:{method}", k, **ours(k))
    oracle = theirs(k)
    torch.manual_seed(3)
    for call, rank in enumerate([1, max(1, k - 1), k + 2]):
        gram = _gram(k, rank, seed=10 * k + call)
        expected = oracle(gram)
        alpha, metrics = strategy.gradient_weights(gram, torch.zeros(k))
        assert torch.equal(alpha, expected.float()), (method, call, alpha, expected)
        assert torch.equal(strategy.weights(), alpha)
        assert metrics["update_norm"] == pytest.approx(float((expected @ gram @ expected).clamp(min=0).sqrt()))
    assert strategy.calls == 3


def test_float32_gram_is_solved_in_float64():
    """The trainer's Gram matrix is float64 already; a float32 one is promoted before TorchJD sees it."""
    gram = _gram(3, 3, 0)
    a, _ = get_weighting("upgrad", 3).gradient_weights(gram.float(), torch.zeros(3))
    assert torch.equal(a, tja.UPGradWeighting()(gram.float().double()).float())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_sign_and_permutation_flags_are_truthful(method):
    """``nonnegative_weights`` holds on random Gram matrices; IMTL-G and Aligned-MTL really give negative weights,
    and PCGrad's random order really breaks exact permutation equivariance (so the contract test exempts them)."""
    kwargs = {"Constant": {"weights": [1.0, -1.0, 2.0, 0.5]}, "FairGrad": {"alpha": 1.0}, "Krum": {"n_byzantine": 0}}
    cls = METHODS[method]
    grams = [_gram(4, rank, seed) for seed in range(12) for rank in (2, 6)]
    negative = False
    for gram in grams:
        alpha, _ = get_weighting(f"jd:{method}", 4, **kwargs.get(method, {})).gradient_weights(gram, torch.zeros(4))
        negative |= bool((alpha < -1e-9).any())
    assert not negative or not cls.nonnegative_weights, method
    if method in ("IMTLG", "AlignedMTL", "Constant"):
        assert negative, f"{method}: no negative weight found, the flag would be needless"


def test_pcgrad_is_not_exactly_permutation_equivariant():
    perm = [2, 0, 1]
    broken = 0
    for seed in range(20):
        gram = _gram(3, 3, seed)
        a, _ = get_weighting("pcgrad", 3).gradient_weights(gram, torch.zeros(3))
        b, _ = get_weighting("pcgrad", 3).gradient_weights(gram[perm][:, perm], torch.zeros(3))
        broken += not torch.allclose(b, a[perm])
    assert broken > 0 and not REGISTERED["pcgrad"].permutation_equivariant


def test_random_draws_leave_the_global_rng_alone_and_follow_the_seed():
    """Every rank gets the same α from the same Gram matrix (same seed and calls), whatever its global RNG did."""
    gram = _gram(4, 4, 1)
    state = torch.get_rng_state()
    a = get_weighting("jd:Random", 4, seed=5)
    first = [a.gradient_weights(gram, torch.zeros(4))[0] for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), state), "the strategy consumed the global RNG"
    torch.rand(7)  # another rank's global RNG is elsewhere: no effect
    b = get_weighting("jd:Random", 4, seed=5)
    assert all(torch.equal(x, b.gradient_weights(gram, torch.zeros(4))[0]) for x in first)
    assert not torch.equal(first[0], first[1])  # a fresh draw per call
    other = get_weighting("jd:Random", 4, seed=6).gradient_weights(gram, torch.zeros(4))[0]
    assert not torch.equal(other, first[0])


def _fingerprint(module: torch.nn.Module) -> dict:
    """Every attribute of every submodule (tensors by value, other objects by repr): what "same state" means."""
    out = {}
    for prefix, m in module.named_modules():
        for key, value in vars(m).items():
            if key == "_modules":
                continue
            if isinstance(value, dict):
                value = {k: v.tolist() if isinstance(v, torch.Tensor) else repr(v) for k, v in value.items()}
            out[f"{prefix}/{key}"] = value.tolist() if isinstance(value, torch.Tensor) else repr(value)
    return out


STATEFUL = [
    ("GradVac", {"beta": 0.7}),
    ("MoDo", {"gamma": 0.5}),
    ("SDMGrad", {"n_iter": 1}),  # a short inner solve: its warm start (the state) matters
    ("PCD", {"beta": 0.5}),
    ("CRMOGM", {"weighting": "GradVac", "weighting_kwargs": {"seed": 1}, "alpha": 0.6}),
    ("PCGrad", {}),
    ("Random", {}),
]


@pytest.mark.parametrize(("method", "kwargs"), STATEFUL, ids=[m for m, _ in STATEFUL])
def test_resume_is_exact(method, kwargs):
    """Five calls straight vs two calls, a checkpoint (torch.save / torch.load) into a fresh strategy, three more:
    the same α at every call, and the same TorchJD object state; a fresh strategy would have given another α."""
    k, grams = 3, [_gram(3, 2 + i % 3, 100 + i) for i in range(5)]
    straight = get_weighting(f"jd:{method}", k, **kwargs)
    expected = [straight.gradient_weights(g, torch.zeros(k))[0] for g in grams]
    first = get_weighting(f"jd:{method}", k, **kwargs)
    for g in grams[:2]:
        first.gradient_weights(g, torch.zeros(k))
    buffer = io.BytesIO()
    torch.save({"weighting_state": first.state_dict()}, buffer)
    buffer.seek(0)
    resumed = get_weighting(f"jd:{method}", k, **kwargs)
    resumed.load_state_dict(torch.load(buffer, weights_only=True)["weighting_state"])
    assert _fingerprint(resumed._jd) == _fingerprint(first._jd)
    assert torch.equal(resumed.weights(), expected[1]) and resumed.calls == 2
    for g, alpha in zip(grams[2:], expected[2:], strict=True):
        assert torch.equal(resumed.gradient_weights(g, torch.zeros(k))[0], alpha)
    fresh = get_weighting(f"jd:{method}", k, **kwargs).gradient_weights(grams[2], torch.zeros(k))[0]
    assert not torch.equal(fresh, expected[2]), "the state does not matter here: the test would prove nothing"


def test_a_state_that_does_not_fit_is_refused_never_reset():
    w = get_weighting("jd:GradVac", 3)
    w.gradient_weights(_gram(3, 3, 0), torch.zeros(3))
    state = copy.deepcopy(w.state_dict())
    del state["torchjd"]["_phi_t"]
    with pytest.raises(ValueError, match=r"^jd:GradVac: cannot resume exactly: the checkpoint's TorchJD state"):
        get_weighting("jd:GradVac", 3).load_state_dict(state)
    with pytest.raises(KeyError, match="missing keys \\['rng'\\]"):
        get_weighting("jd:GradVac", 3).load_state_dict({k: v for k, v in w.state_dict().items() if k != "rng"})
    with pytest.raises(KeyError, match="unexpected keys"):
        get_weighting("upgrad", 3).load_state_dict({**get_weighting("upgrad", 3).state_dict(), "rng": 0})


def test_non_finite_gram_gives_nan_and_keeps_the_state():
    w = get_weighting("jd:MoDo", 3)
    w.gradient_weights(_gram(3, 3, 0), torch.zeros(3))
    before = copy.deepcopy(w.state_dict())
    gram = _gram(3, 3, 1)
    gram[0, 1] = float("nan")
    alpha, metrics = w.gradient_weights(gram, torch.zeros(3))
    assert torch.isnan(alpha).all() and metrics == {}
    assert w.calls == 1 and torch.equal(w.state_dict()["torchjd"]["_lambda"], before["torchjd"]["_lambda"])


def test_gram_below_norm_eps_is_flagged(caplog):
    """TorchJD treats a Gram matrix of trace < norm_eps as zero: the metric says so at every call, a warning once."""
    w = get_weighting("upgrad", 3)
    tiny = _gram(3, 3, 0) * 1e-8
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        _, small = w.gradient_weights(tiny, torch.zeros(3))
        w.gradient_weights(_gram(3, 3, 1) * 1e-8, torch.zeros(3))
        _, large = w.gradient_weights(_gram(3, 3, 2), torch.zeros(3))
    assert small["below_norm_eps"] == 1.0 and large["below_norm_eps"] == 0.0
    warnings = [r.getMessage() for r in caplog.records if "norm_eps" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("upgrad: Gram trace ") and "< norm_eps 0.0001" in warnings[0]
    alpha, lowered = get_weighting("upgrad", 3, norm_eps=0.0).gradient_weights(tiny, torch.zeros(3))
    assert lowered["below_norm_eps"] == 0.0 and torch.equal(
        alpha, tja.UPGradWeighting(projector=_projector(0.0))(tiny).float()
    )


def test_same_trainer_path_as_mgda():
    """What the trainer computes for every adapter is what it computes for MGDA (micro-batch Gram, per-objective
    advantages): the DDP, ZeRO-3 (logprobs) and LoRA paths MGDA is tested on."""
    for cls in METHODS.values():
        assert cls.space == "gradient" and cls.trainer_needs(cls.__new__(cls)) == MGDAWeighting(3).trainer_needs()


def test_defaults_are_inside_their_declared_ranges():
    for cls in METHODS.values():
        params = inspect.signature(cls.__init__).parameters
        for key, spec in cls.ranges.items():
            assert key in params, (cls.name, key)
            if params[key].default is not params[key].empty and params[key].default is not None:
                check_number(params[key].default, f"{cls.name}: {key}", spec)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        ("jd:Nope", {}, ValueError, r"^unknown TorchJD weighting 'jd:Nope'; choose from \['AlignedMTL', "),
        ("jd:upgrad", {}, ValueError, r"^unknown TorchJD weighting 'jd:upgrad' \(did you mean 'jd:UPGrad'\?\)"),
        ("jd:ExcessMTL", {}, ValueError, r"^weighting 'jd:ExcessMTL' is not available: .* needs the full Jacobian"),
        ("jd:NashMTL", {}, ValueError, r"^weighting 'jd:NashMTL' is not available: .* without a Gramian weighting"),
        ("nope", {}, ValueError, r"^unknown weighting 'nope'; choose from \[.*'upgrad'\] or 'jd:<Name>'"),
        ("jd:GradVac", {"beta": "high"}, TypeError, r"^weighting 'jd:GradVac' kwarg 'beta' must be <class 'float'>"),
        ("jd:GradVac", {"beta": 2.0}, ValueError, r"^jd:GradVac: beta must be finite and >= 0 and <= 1, got 2.0"),
        ("jd:GradVac", {"gamma": 1.0}, TypeError, r"^weighting 'jd:GradVac' got an unknown kwarg 'gamma'"),
        ("jd:FairGrad", {}, TypeError, r"^weighting 'jd:FairGrad' needs the kwarg 'alpha'"),
        ("cagrad", {"c": -1.0}, ValueError, r"^cagrad: c must be finite and >= 0 and <= 100, got -1.0"),
        ("upgrad", {"pref_vector": [1.0, 1.0]}, ValueError, r"^upgrad: pref_vector has 2 entries but there are 3"),
        ("aligned_mtl", {"scale_mode": "max"}, TypeError, r"^weighting 'aligned_mtl' kwarg 'scale_mode' must be"),
        ("jd:Krum", {"n_byzantine": 1}, ValueError, r"^jd:Krum: Parameter `gramian` should have at least 4 rows"),
        ("jd:PCD", {"tau": [0.1]}, ValueError, r"^jd:PCD: When `tau` is a vector, it must have one value per"),
        ("jd:CRMOGM", {"weighting": "Nope"}, ValueError, r"^jd:CRMOGM: unknown TorchJD weighting 'jd:Nope'"),
        ("jd:CRMOGM", {"weighting_kwargs": {"x": 1}}, TypeError, r"^weighting 'upgrad' got an unknown kwarg 'x'"),
    ],
)
def test_errors_name_the_field(name, kwargs, error, message):
    with pytest.raises(error, match=message) as exc:
        get_weighting(name, 3, **kwargs)
    assert "\n" not in str(exc.value)


def test_config_accepts_jd_names_and_refuses_bad_ones(tmp_path):
    from mo_align.configs import MOGRPOConfig

    ok = MOGRPOConfig(output_dir=str(tmp_path), weighting="jd:GradVac", weighting_kwargs={"beta": 0.9}, use_cpu=True)
    assert weighting_class(ok.weighting) is METHODS["GradVac"]
    with pytest.raises(ValueError, match=r"^weighting 'jd:ExcessMTL' is not available"):
        MOGRPOConfig(output_dir=str(tmp_path), weighting="jd:ExcessMTL", use_cpu=True)
    with pytest.raises(TypeError, match=r"^weighting 'jd:FairGrad' needs the kwarg 'alpha'"):
        MOGRPOConfig(output_dir=str(tmp_path), weighting="jd:FairGrad", use_cpu=True)


def test_a_missing_solver_names_the_extra(monkeypatch):
    import torchjd._mixins

    real = torchjd._mixins.find_spec
    monkeypatch.setattr(torchjd._mixins, "find_spec", lambda name: None if name == "quadprog" else real(name))
    with pytest.raises(
        MissingExtraError, match=r"^weighting 'upgrad': .*quadprog.*; pip install 'mo_align\[torchjd\]'"
    ):
        get_weighting("upgrad", 3)


def test_registered_keys_and_jd_names_are_one_class():
    for key, cls in REGISTERED.items():
        assert WEIGHTINGS[key] is cls is weighting_class(f"jd:{cls.method}") and cls.name == key
        assert issubclass(cls, JDWeighting)
    validate_kwargs(METHODS["SDMGrad"], {"lambda_": 0.5, "pref_vector": [1.0, 2.0, 3.0]})
    assert repr(get_weighting("jd:GradVac", 3)) == "JDGradVac(beta=0.5, eps=1e-08, seed=0)"
    from mo_align.hub.card import algorithm_description

    assert algorithm_description("jd:GradVac") == algorithm_description("upgrad") != ""
    assert algorithm_description("jd:GradVac").startswith("TorchJD's Gramian weightings")


def test_a_zero_gradient_is_counted_and_makes_cagrad_and_mgda_stop():
    """An objective without signal on a micro-batch (all advantages zero: g_k = 0) makes it Pareto-stationary:
    TorchJD's CAGrad returns α = 0 and MGDA the zero direction, UPGrad still follows the others; all say so."""
    gram = _gram(3, 3, 4)
    gram[1, :] = gram[:, 1] = 0.0
    alphas = {}
    for name in ("cagrad", "jd:MGDA", "upgrad"):
        alphas[name], metrics = get_weighting(name, 3).gradient_weights(gram, torch.zeros(3))
        assert metrics["zero_gradients"] == 1.0
        assert (metrics["update_norm"] < 1e-6) == (name != "upgrad"), (name, metrics)
    assert torch.equal(alphas["cagrad"], torch.zeros(3))
