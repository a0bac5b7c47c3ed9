"""Contract every weighting in ``WEIGHTINGS`` (and the test-only stateful one) must satisfy."""

import copy
import io

import pytest
import torch

from mo_align.weightings import WEIGHTINGS, LinearWeighting, ObjectiveStats, get_weighting
from tests.helpers import DriftWeighting


K, G, N = 3, 4, 16
CLASSES = [*WEIGHTINGS.values(), DriftWeighting]


def make_stats(seed: int = 0, estimator: str = "grpo", nan: bool = False) -> ObjectiveStats:
    """A batch as the trainer hands it to ``update``: rewards, lengths and the extras it always supplies."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 2, (N, K), generator=g).float()
    r[:, 1] = torch.rand(N, generator=g)
    if nan:
        r[3, 2] = float("nan")
        r[7] = float("nan")  # an unscorable row
    lengths = torch.randint(1, 20, (N,), generator=g).float()
    grads = torch.randn(K, 6, generator=g, dtype=torch.float64)
    extras = {"signal": torch.randn(N, generator=g), "gramian": grads @ grads.T, "lr": 1e-3}
    return ObjectiveStats(
        rewards=r, group_size=G, lengths=lengths, estimator=estimator, objective_names=("a", "b", "c"), extras=extras
    )


def same(a, b) -> bool:
    """Recursive equality of state dicts (tensors compared exactly)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_registry_keys_match_modules():
    """One module per key, except the TorchJD adapter ``jd``: one module declaring several keys (``jd.REGISTERED``),
    each with its own class whose name is the key; every key (of either kind) is a make target with a tiny and a
    paper-scale recipe of the same name (make's list is read from the recipe names)."""
    import pathlib
    import subprocess

    import mo_align.weightings as pkg
    from mo_align.weightings import jd

    modules = {p.stem for p in pathlib.Path(pkg.__file__).parent.glob("*.py")} - {
        "__init__",
        "base",
        "validation",
        "papers",
    }
    assert "jd" not in WEIGHTINGS and jd.REGISTERED
    assert set(WEIGHTINGS) == (modules - {"jd"}) | set(jd.REGISTERED)
    for key, cls in WEIGHTINGS.items():
        assert cls.name == key
        assert (cls.__module__ == "mo_align.weightings.jd") == (key in jd.REGISTERED), key
    root = pathlib.Path(pkg.__file__).parents[2]
    shown = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=root, capture_output=True, text=True)
    (algorithms,) = [line for line in shown.stdout.splitlines() if line.strip().startswith("algorithms:")]
    assert algorithms.split()[1:] == sorted(WEIGHTINGS)
    for key in WEIGHTINGS:
        for model in ("tiny", "qwen2.5-1.5b"):
            assert (root / "recipes" / model / f"{key}.yaml").is_file(), (model, key)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_shapes_finite_and_pure(cls, estimator):
    w = cls(K)
    stats = make_stats(estimator=estimator)
    weights = w.weights()
    assert weights.shape == (K,) and torch.isfinite(weights).all() and (weights >= 0).all()
    before = copy.deepcopy(w.state_dict())
    adv1, adv2 = w.combine(stats), w.combine(stats)
    assert adv1.shape == (N,) and torch.isfinite(adv1).all()
    assert torch.equal(adv1, adv2)
    assert w.scalarize(stats.rewards).shape == (N,)
    assert same(before, w.state_dict())


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
def test_update_deterministic_and_state_round_trip(cls):
    a, b = cls(K), cls(K)
    for step in range(3):
        stats = make_stats(seed=step)
        assert a.update(stats) == b.update(stats)
        assert torch.equal(a.weights(), b.weights())
    c, buffer = cls(K), io.BytesIO()
    torch.save(a.state_dict(), buffer)  # as mo_state.pt holds it, read back as resume reads it
    buffer.seek(0)
    c.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(c.weights(), a.weights())
    stats = make_stats(seed=9)
    assert torch.equal(c.combine(stats), a.combine(stats))
    a.update(stats), c.update(stats)
    assert torch.equal(c.weights(), a.weights())
    with pytest.raises(KeyError):
        c.load_state_dict({**a.state_dict(), "bogus": 1})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp", "gdpo"])
def test_nan_rewards_never_give_nan_advantages(cls, estimator):
    w = cls(K)
    stats = make_stats(nan=True, estimator=estimator)
    adv = w.combine(stats)
    assert torch.isfinite(adv).all()
    assert adv[7] == 0.0  # unscorable row
    w.update(stats)
    assert torch.isfinite(w.weights()).all()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
def test_objective_permutation_equivariance(cls):
    # Strategies with a distinguished objective (Lagrangian's primary, index 0 by default) are only equivariant
    # under permutations that keep it in place.
    perm = [2, 0, 1] if cls.permutation_equivariant else [0, 2, 1]
    stats = make_stats()
    gram = stats.extras["gramian"]
    permuted = ObjectiveStats(
        rewards=stats.rewards[:, perm],
        group_size=G,
        lengths=stats.lengths,
        objective_names=tuple(stats.objective_names[p] for p in perm),
        extras={**stats.extras, "gramian": gram[perm][:, perm]},
    )
    a, b = cls(K), cls(K)
    a.update(stats), b.update(permuted)
    torch.testing.assert_close(b.weights(), a.weights()[perm])
    torch.testing.assert_close(b.combine(permuted), a.combine(stats))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
def test_repr_shows_hyperparameters(cls):
    text = repr(cls(K))
    assert text.startswith(cls.__name__ + "(")


def test_get_weighting_errors():
    with pytest.raises(ValueError, match=r"unknown weighting 'nope'; choose from \[.*'linear'"):
        get_weighting("nope", 3)
    with pytest.raises(TypeError, match="unknown kwarg 'alpha'"):
        get_weighting("linear", 3, alpha=1.0)
    with pytest.raises(TypeError, match="kwarg 'weights' must be"):
        get_weighting("linear", 3, weights="uniform")
    with pytest.raises(ValueError, match="2 entries but there are 3 objectives"):
        get_weighting("linear", 3, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        get_weighting("linear", 2, weights=[1.0, -1.0])


def test_linear_defaults_and_scalarize():
    w = get_weighting("linear", 4)
    assert torch.equal(w.weights(), torch.full((4,), 0.25))
    lin = LinearWeighting(2, weights=[1.0, 3.0])
    r = torch.tensor([[1.0, 0.0], [float("nan"), 1.0], [float("nan"), float("nan")]])
    s = lin.scalarize(r)
    assert s[0] == 1.0 and s[1] == 3.0 and torch.isnan(s[2])
    assert repr(lin) == "LinearWeighting(weights=[1.0, 3.0])"


GRADIENT = [cls for cls in WEIGHTINGS.values() if cls.space == "gradient"]


@pytest.mark.parametrize("cls", GRADIENT, ids=lambda c: c.name)
def test_gradient_space_weights_contract(cls):
    stats = make_stats()
    gram, losses = stats.extras["gramian"], torch.tensor([0.3, -0.1, 0.2])
    a, b = cls(K), cls(K)
    for _ in range(3):
        wa, ma = a.gradient_weights(gram, losses)
        wb, mb = b.gradient_weights(gram, losses)
        assert wa.shape == (K,) and torch.isfinite(wa).all()
        # IMTL-G and Aligned-MTL may give negative weights (tests/weightings/test_jd.py shows one)
        assert (wa >= 0).all() or not cls.nonnegative_weights
        assert torch.equal(wa, wb) and ma == mb  # deterministic: every rank computes the same weights
    if not cls.permutation_equivariant:  # PCGrad's random order (tests/weightings/test_jd.py)
        return
    perm = [2, 0, 1]
    c, d = cls(K), cls(K)
    wc, _ = c.gradient_weights(gram, losses)
    wd, _ = d.gradient_weights(gram[perm][:, perm], losses[perm])
    torch.testing.assert_close(wd, wc[perm])
