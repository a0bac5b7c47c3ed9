"""TorchJD's Gramian weightings (Jacobian descent) as gradient-space strategies: α = w(Gram), update Σ_k α_k ∇L_k.

With per-objective policy losses L_k of a micro-batch and their gradients g_k = ∇L_k (the rows of the Jacobian J),
the trainer builds the global Gram matrix G = J Jᵀ, G_ij = ⟨g_i, g_j⟩ (all ranks; ``mo_align.trainer.gram``), TorchJD's
``<Name>Weighting`` (0.18) maps it to α = w(G) ∈ R^K, and the update d = Jᵀ α = Σ_k α_k ∇L_k is applied exactly
(Σ_k α_k L_k is back-propagated): what TorchJD's ``GramianWeightedAggregator`` computes from J (Quinton & Rey,
"Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232). Cost: as MGDA, K backward passes per
micro-batch (``gramian_space: parameters``) or a K × K Gram of per-token log-prob gradients (``logprobs``, ZeRO-3).

Registry keys (``key=``): upgrad, dualproj, cagrad, imtlg, aligned_mtl, pcgrad (:data:`REGISTERED`); every method of
:data:`METHODS` is also ``weighting: jd:<Name>`` (e.g. ``jd:GradVac``), TorchJD's kwargs as ``weighting_kwargs``. The
stateful (GradVac, CR-MOGM, MoDo, SDMGrad, PCD) and random (PCGrad, GradVac, Random) methods checkpoint their state; a
state that does not fit the installed TorchJD is refused at resume, never reset.

Deviations from TorchJD / the papers:
    1. α is chosen per micro-batch (``gradient_cadence = "micro_batch"``, as mo_align's MGDA) and a stateful method
       steps once per micro-batch: per-step weights would hold all K per-objective gradients for the whole step.
    2. ``gramian_space: logprobs`` / ``gramian_params`` measure G there (TorchJD: the full Jacobian); α acts on all.
    3. Random draws (PCGrad's and GradVac's orders, Random's weights) come from a private CPU stream seeded with
       ``seed`` and checkpointed, not torch's global RNG: every rank draws the same and training's RNG is untouched.
    4. MoDo and SDMGrad get the micro-batch Gram J Jᵀ, not J₁ J₂ᵀ of two independent batches that their guarantees
       assume (warned). ExcessMTL (needs J itself) and the aggregators without a Gramian weighting (NashMTL, ConFIG,
       GradDrop, TrimmedMean) are refused, naming the reason. CAGrad's ``c`` defaults to 0.4 (TorchJD: required).
    5. A non-finite G never reaches TorchJD (α is NaN: the trainer stops the run naming the strategy). TorchJD treats
       a G of trace < ``norm_eps`` as zero (log-prob Gram matrices of big batches can be that small): warned, logged.
An objective whose advantages are all zero on a micro-batch has g_k = 0: the micro-batch is then Pareto-stationary
and MGDA and CAGrad apply no update (metrics ``zero_gradients`` and ``update_norm`` show it), as TorchJD decides.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any, ClassVar, Literal

import torch

from mo_align.extras import MissingExtraError, require
from mo_align.weightings import papers as P
from mo_align.weightings.base import GRAM_NO_STATE, Weighting, per_objective
from mo_align.weightings.validation import validate_kwargs


logger = logging.getLogger("mo_align")
PREFIX = "jd:"
NOT_GRAMIAN = dict.fromkeys(
    ("NashMTL", "ConFIG", "GradDrop", "TrimmedMean"), "is an aggregator without a Gramian weighting"
)
NOT_GRAMIAN["ExcessMTL"] = "needs the full Jacobian (K x P: it sums per-parameter squared gradients), not the Gram"


def _module_state(module: torch.nn.Module) -> dict[str, Any]:
    """Every buffer (also the unset ones) and ``_state_key`` of a TorchJD weighting and its wrapped weightings."""
    out: dict[str, Any] = {}
    for prefix, m in module.named_modules():
        for name, buf in m._buffers.items():
            out[f"{prefix}.{name}" if prefix else name] = None if buf is None else buf.detach().clone()
        if "_state_key" in vars(m):
            out[f"{prefix}._state_key" if prefix else "_state_key"] = copy.deepcopy(vars(m)["_state_key"])
    return out


def _load_module_state(module: torch.nn.Module, state: dict[str, Any], who: str) -> None:
    expected = sorted(_module_state(module))
    if sorted(state) != expected:
        why = f"has entries {sorted(state)}, the installed TorchJD keeps {expected} (was TorchJD upgraded?)"
        raise ValueError(f"{who}: cannot resume exactly: the checkpoint's TorchJD state {why}")
    modules = dict(module.named_modules())
    for key, value in state.items():
        prefix, _, name = key.rpartition(".")
        setattr(modules[prefix], name, value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value))


REQUIRED = inspect.Parameter.empty  # a ``params`` default: the kwarg has none (TorchJD requires it)
PREF = (list[float] | None, None, "[0, 1e6]")  # a preference vector: K non-negative numbers, default 1/K each
EPS, SEED = (float, 1e-4, "[0, 1]"), (int, 0, "[0, 1e9]")  # norm_eps and reg_eps; seed
VECTORS = ("pref_vector", "weights", "initial_weights")  # per-objective lists, passed to TorchJD as tensors


class JDWeighting(Weighting):
    """A TorchJD Gramian weighting: ``method`` names TorchJD's ``<method>Weighting``; ``params`` ({kwarg: (type,
    default[, range])}: TorchJD's, ranges made finite) gives the typed ``__init__`` and the ``ranges``."""

    space = "gradient"
    requires = frozenset({"gramian"})
    method: ClassVar[str] = ""
    papers = (P.JACOBIAN_DESCENT,)  # and each method's own paper
    params: ClassVar[dict[str, tuple[Any, ...]]] = {}
    stateful: ClassVar[bool] = False  # TorchJD keeps state across calls: checkpointed
    cross_gram: ClassVar[bool] = False  # designed for J₁ J₂ᵀ of two independent batches (MoDo, SDMGrad)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ranges = {k: spec[2] for k, spec in cls.params.items() if len(spec) > 2}
        if "__init__" in cls.__dict__:  # a subclass with its own constructor (e.g. a test's recording one)
            return
        kw_only, positional = inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
        signature = inspect.Signature(
            [inspect.Parameter("self", positional), inspect.Parameter("num_objectives", positional, annotation=int)]
            + [inspect.Parameter(k, kw_only, default=s[1], annotation=s[0]) for k, s in cls.params.items()]
        )

        def __init__(self: JDWeighting, num_objectives: int, **hyperparameters: Any) -> None:
            bound = signature.bind(self, num_objectives, **hyperparameters)  # TypeError: unknown or missing kwarg
            bound.apply_defaults()
            JDWeighting.__init__(self, num_objectives, **dict(list(bound.arguments.items())[2:]))

        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__annotations__ = {"num_objectives": int, **{k: s[0] for k, s in cls.params.items()}}
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, num_objectives: int, **hyperparameters: Any) -> None:
        super().__init__(num_objectives)
        self._hparams = hyperparameters
        seed = hyperparameters.get("seed")
        self._rng = torch.Generator().manual_seed(seed).get_state() if seed is not None else None
        require("torchjd", f"weighting {self.name!r} (TorchJD's {self.method})")
        try:
            import torchjd.aggregation  # optional extra: torchjd (checked by require() above)

            self._jd = self._build(torchjd.aggregation)
        except ImportError as exc:  # a solver of the method (quadprog, cvxpy, scipy) is missing
            raise MissingExtraError(f"weighting {self.name!r}: {exc}; pip install 'mo_align[torchjd]'") from exc
        except ValueError as exc:  # TorchJD's own checks of its arguments
            raise ValueError(f"{self.name}: {exc}") from exc
        self._last = torch.full((num_objectives,), 1.0 / num_objectives)
        self.calls = 0
        self._warned = False
        try:  # errors that depend on K (Krum's minimum size, vector lengths) now, not at the first step
            self._apply(copy.deepcopy(self._jd), torch.eye(num_objectives, dtype=torch.float64), keep_rng=False)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from exc
        if self.cross_gram:
            why = "not J₁ J₂ᵀ of two independent batches, which its convergence guarantee assumes"
            logger.warning("%s receives the Gram matrix J Jᵀ of one micro-batch, %s", self.name, why)

    def _build(self, aggregation: Any) -> Any:
        """TorchJD's ``<method>Weighting`` with the hyperparameters (vectors as float64 tensors; ``norm_eps`` and
        ``reg_eps`` of UPGrad and DualProj go to their quadprog projector; ``seed`` is mo_align's)."""
        kwargs = {k: v for k, v in self._hparams.items() if k != "seed"}
        for key in VECTORS:
            if key in kwargs:
                kwargs[key] = self._vector(key)
        if "reg_eps" in kwargs:
            from torchjd.linalg import QuadprogProjector  # optional extra: torchjd

            kwargs["projector"] = QuadprogProjector(norm_eps=kwargs.pop("norm_eps"), reg_eps=kwargs.pop("reg_eps"))
        return getattr(aggregation, f"{self.method}Weighting")(**kwargs)

    def _vector(self, key: str) -> torch.Tensor | None:
        """A per-objective hyperparameter as a float64 tensor (``None`` stays ``None``)."""
        values = per_objective(self._hparams.get(key), self.num_objectives, key)  # _build's caller names the strategy
        return None if values is None else torch.tensor(values, dtype=torch.float64)

    def _apply(self, jd: Any, gram: torch.Tensor, keep_rng: bool = True) -> torch.Tensor:
        """TorchJD's α for ``gram``, with torch's RNG set to this strategy's stream (the global one restored)."""
        with torch.random.fork_rng(devices=[]):
            if self._rng is not None:
                torch.set_rng_state(self._rng)
            alpha = jd(gram)
            if self._rng is not None and keep_rng:
                self._rng = torch.get_rng_state()
        return alpha

    def weights(self) -> torch.Tensor:
        """The α applied to the last micro-batch (uniform before the first)."""
        return self._last.clone()

    def gradient_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """α = w(G) (K,) for this micro-batch's global Gram matrix G (K, K), and the metrics to log."""
        g = gram.detach().double().cpu()
        if not torch.isfinite(g).all():  # NaN gradients: the trainer stops the run naming this strategy
            return torch.full((self.num_objectives,), float("nan")), {}
        metrics = self._check_scale(g)
        try:
            alpha = self._apply(self._jd, g).double().cpu()
        except ValueError as exc:  # a solver that failed on this G (TorchJD's message)
            raise ValueError(f"{self.name}: TorchJD's {self.method} failed at call {self.calls + 1}: {exc}") from exc
        self.calls += 1
        self._last = alpha.float()
        metrics["update_norm"] = float((alpha @ g @ alpha).clamp(min=0).sqrt())
        metrics["zero_gradients"] = float((torch.diagonal(g) <= 0).sum())  # objectives without signal here
        return alpha.float(), metrics

    def _check_scale(self, g: torch.Tensor) -> dict[str, float]:
        """``below_norm_eps``: TorchJD treats a Gram matrix whose trace is below ``norm_eps`` as zero (warned once)."""
        if "norm_eps" not in self._hparams:
            return {}
        trace, eps = float(torch.trace(g)), self._hparams["norm_eps"]
        if trace < eps and not self._warned:
            self._warned = True
            logger.warning("%s: Gram trace %.3g < norm_eps %g: TorchJD treats it as zero", self.name, trace, eps)
        return {"below_norm_eps": float(trace < eps)}

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self._hparams)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"last": self._last.clone(), "calls": self.calls}
        if self._rng is not None:
            state["rng"] = self._rng.clone()
        if self.stateful:
            state["torchjd"] = _module_state(self._jd)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        missing = set(self.state_dict()) - set(state)
        if missing:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}")
        self._last, self.calls = state["last"].clone(), int(state["calls"])
        if self._rng is not None:
            self._rng = state["rng"].clone()
        if self.stateful:
            _load_module_state(self._jd, state["torchjd"], self.name)


class JDUPGrad(JDWeighting, key="upgrad"):
    """UPGrad: project each g_k onto the dual cone of {g_j} and average with ``pref_vector`` (default 1/K): a
    non-conflicting update, ⟨d, g_k⟩ ≥ 0 for every k (Quinton & Rey 2024, arXiv 2406.16232)."""

    method, lab_order, step_size = "UPGrad", 5, GRAM_NO_STATE  # lab_order: mo_align.lab.catalog
    params = {"pref_vector": PREF, "norm_eps": EPS, "reg_eps": EPS}  # noqa: RUF012


class JDDualProj(JDWeighting, key="dualproj"):
    """DualProj: the preference-weighted mean gradient projected onto the dual cone of {g_j} (GEM, Lopez-Paz &
    Ranzato 2017, arXiv 1706.08840; as a Jacobian-descent aggregator in arXiv 2406.16232)."""

    method, papers, lab_order, step_size = "DualProj", (P.JACOBIAN_DESCENT, P.GEM), 5, GRAM_NO_STATE
    params = {"pref_vector": PREF, "norm_eps": EPS, "reg_eps": EPS}  # noqa: RUF012


class JDCAGrad(JDWeighting, key="cagrad"):
    """CAGrad: maximise the worst objective's improvement within a ball of radius c‖ḡ‖ around the mean gradient
    (Liu et al. 2021, arXiv 2110.14048; TorchJD solves it with CLARABEL through cvxpy). ``c`` defaults to 0.4. With
    a zero gradient TorchJD returns α = 0 (the official code: about the mean gradient, /(1 + c²))."""

    method, papers, lab_order, step_size = "CAGrad", (P.JACOBIAN_DESCENT, P.CAGRAD), 5, GRAM_NO_STATE
    params = {"c": (float, 0.4, "[0, 100]"), "norm_eps": EPS}  # noqa: RUF012


class JDIMTLG(JDWeighting, key="imtlg"):
    """IMTL-G: equal projections of the update onto every unit gradient, α ∝ G⁺ diag(G)^½ (Liu et al. 2021,
    "Towards Impartial Multi-task Learning"; for dependent gradients, arXiv 2406.16232). α may be negative."""

    method, papers, lab_order = "IMTLG", (P.JACOBIAN_DESCENT, P.IMTL), None  # not run by the lab
    nonnegative_weights = False


class JDAlignedMTL(JDWeighting, key="aligned_mtl"):
    """Aligned-MTL: align the principal components of J (condition number 1), then the preference-weighted sum
    (Senushkin et al. 2023, arXiv 2305.19000). α may be negative."""

    method, papers, lab_order = "AlignedMTL", (P.JACOBIAN_DESCENT, P.ALIGNED_MTL), None  # not run by the lab
    nonnegative_weights = False
    params = {"pref_vector": PREF, "scale_mode": (Literal["min", "median", "rmse"], "min")}  # noqa: RUF012


class JDPCGrad(JDWeighting, key="pcgrad"):
    """PCGrad: remove from each g_k its conflicting components along the others, in a random order, and sum (Yu et
    al. 2020, arXiv 2001.06782). The order is drawn per call: α is permutation-equivariant in distribution only."""

    method, papers, lab_order = "PCGrad", (P.JACOBIAN_DESCENT, P.PCGRAD), None  # not run by the lab
    permutation_equivariant = False
    params = {"seed": SEED}  # noqa: RUF012


class JDGradVac(JDWeighting):
    """GradVac: raise each pairwise cosine to its EMA target φ̂ (state, K × K), in a random order (Wang et al. 2021)."""

    name, method, papers = "jd:GradVac", "GradVac", (P.JACOBIAN_DESCENT, P.GRADVAC)
    stateful, permutation_equivariant = True, False
    params = {"beta": (float, 0.5, "[0, 1]"), "eps": (float, 1e-8, "[0, 1]"), "seed": SEED}  # noqa: RUF012


class JDFairGrad(JDWeighting):
    """FairGrad: α-fair allocation, solve G x = x^(−1/α), x ≥ 0 (Ban & Ji 2024, arXiv 2402.15638; scipy)."""

    name, method, papers = "jd:FairGrad", "FairGrad", (P.JACOBIAN_DESCENT, P.FAIRGRAD)
    params = {"alpha": (float, REQUIRED, "[0, 100]"), "max_iters": (int | None, None, "[1, 1e7]")}  # noqa: RUF012


class JDMoDo(JDWeighting):
    """MoDo: one projected step λ ← Π_Δ(λ − γ (G + ρ I) λ) per call (state λ; Chen et al., JMLR 2024)."""

    name, method, papers = "jd:MoDo", "MoDo", (P.JACOBIAN_DESCENT, P.MODO)
    stateful = cross_gram = True
    params = {"gamma": (float, 0.1, "(0, 1e3]"), "rho": (float, 0.1, "[0, 1e3]")}  # noqa: RUF012


class JDSDMGrad(JDWeighting):
    """SDMGrad: direction-oriented MGDA, inner momentum SGD on the simplex pulled towards ``pref_vector`` by
    ``lambda_`` (state w; Xiao et al. 2023, arXiv 2305.18409)."""

    name, method, papers = "jd:SDMGrad", "SDMGrad", (P.JACOBIAN_DESCENT, P.SDMGRAD)
    stateful = cross_gram = True
    params = {"lr": (float, 10.0, "(0, 1e6]"), "momentum": (float, 0.5, "[0, 1)")}  # noqa: RUF012
    params |= {"n_iter": (int, 20, "[1, 1e6]"), "lambda_": (float, 0.3, "[0, 1e6]"), "pref_vector": PREF}


class JDMGDA(JDWeighting):
    """TorchJD's MGDA: Frank-Wolfe for the min-norm point of the convex hull of {g_k} (Sener & Koltun 2018,
    arXiv 1810.04650, Algorithm 2); mo_align's ``mgda`` solves the same problem to a tighter tolerance."""

    name, method, papers = "jd:MGDA", "MGDA", (P.JACOBIAN_DESCENT, P.MGDA)
    params = {"epsilon": (float, 1e-3, "(0, 1]"), "max_iters": (int, 100, "[1, 1e7]")}  # noqa: RUF012


class JDMean(JDWeighting):
    """Mean: α = 1/K (linear scalarisation in gradient space)."""

    name, method = "jd:Mean", "Mean"


class JDSum(JDWeighting):
    """Sum: α = 1 for every objective."""

    name, method = "jd:Sum", "Sum"


class JDConstant(JDWeighting):
    """Constant: α = ``weights`` (K numbers) at every call."""

    name, method = "jd:Constant", "Constant"
    nonnegative_weights = permutation_equivariant = False
    params = {"weights": (list[float], REQUIRED)}  # noqa: RUF012


class JDRandom(JDWeighting):
    """Random: α = softmax(z), z ~ N(0, I) drawn per call (Lin et al. 2022, arXiv 2111.10603)."""

    name, method, papers = "jd:Random", "Random", (P.JACOBIAN_DESCENT, P.RANDOM)
    permutation_equivariant = False
    params = {"seed": SEED}  # noqa: RUF012


class JDKrum(JDWeighting):
    """(Multi-)Krum: the ``n_selected`` gradients closest to their neighbours, robust to ``n_byzantine`` outliers
    (Blanchard et al. 2017); needs K ≥ n_byzantine + 3. Ties are broken by index."""

    name, method, papers = "jd:Krum", "Krum", (P.JACOBIAN_DESCENT, P.KRUM)
    permutation_equivariant = False
    params = {"n_byzantine": (int, REQUIRED, "[0, 1e6]"), "n_selected": (int, 1, "[1, 1e6]")}  # noqa: RUF012


class JDPCD(JDWeighting):
    """PCD, priority-constrained descent: follow the first objective's gradient while each other one keeps a
    fraction ``tau`` of its own progress (state: EMA of the squared norms; TMLR 2026, arXiv 2606.29521). The first
    reward function is the primary objective; a list ``tau`` has K − 1 entries."""

    name, method, papers = "jd:PCD", "PCD", (P.JACOBIAN_DESCENT, P.PCD)
    stateful, permutation_equivariant = True, False
    params = {"tau": (float | list[float], 0.02, "[0, 1]"), "beta": (float, 0.999, "[0, 1)")}  # noqa: RUF012
    params |= {"eps": (float, 1e-8, "[0, 1]")}

    def _build(self, aggregation: Any) -> Any:
        tau = self._hparams["tau"]
        tau = torch.tensor(tau, dtype=torch.float64) if isinstance(tau, list) else tau
        return aggregation.PCDWeighting(tau=tau, beta=self._hparams["beta"], eps=self._hparams["eps"])


class JDCRMOGM(JDWeighting):
    """CR-MOGM: an EMA of another method's weights, λ_t = α λ_{t−1} + (1 − α) λ̂_t (state λ; Zhou et al., NeurIPS
    2022, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and Beyond"). ``weighting`` names
    the wrapped method (a key of :data:`METHODS`), ``weighting_kwargs`` its hyperparameters."""

    name, method, papers = "jd:CRMOGM", "CRMOGM", (P.JACOBIAN_DESCENT, P.CRMOGM)
    stateful, permutation_equivariant, nonnegative_weights = True, False, False  # those of the wrapped method
    params = {"weighting": (str, "UPGrad"), "weighting_kwargs": (dict[str, Any] | None, None)}  # noqa: RUF012
    params |= {"alpha": (float, 0.9, "[0, 1]"), "initial_weights": (list[float] | None, None)}

    def _build(self, aggregation: Any) -> Any:
        h = self._hparams
        inner = method_class(h["weighting"])
        validate_kwargs(inner, h["weighting_kwargs"] or {})
        wrapped = inner(self.num_objectives, **(h["weighting_kwargs"] or {}))
        self._rng = wrapped._rng  # a random wrapped method draws from its stream, kept here
        weights = self._vector("initial_weights")
        return aggregation.CRMOGMWeighting(wrapped._jd, alpha=h["alpha"], initial_weights=weights)


METHODS: dict[str, type[JDWeighting]] = {c.method: c for c in JDWeighting.__subclasses__()}  # TorchJD name
# the methods with a registry key of their own (= recipe name = make target); the others are jd:<Name> only
REGISTERED: dict[str, type[JDWeighting]] = {c.name: c for c in METHODS.values() if not c.name.startswith(PREFIX)}


def method_class(name: str) -> type[JDWeighting]:
    """The adapter of TorchJD's ``name`` (e.g. ``"GradVac"``, without the ``jd:`` prefix); a clear error for a
    TorchJD aggregation that has no Gramian weighting, or an unknown name."""
    if name in METHODS:
        return METHODS[name]
    if name in NOT_GRAMIAN:
        raise ValueError(f"weighting '{PREFIX}{name}' is not available: TorchJD's {name} {NOT_GRAMIAN[name]}")
    close = [m for m in METHODS if m.lower() == str(name).lower().replace("-", "").replace("_", "")]
    hint = f" (did you mean '{PREFIX}{close[0]}'?)" if close else ""
    raise ValueError(f"unknown TorchJD weighting '{PREFIX}{name}'{hint}; choose from {sorted(METHODS)}")
