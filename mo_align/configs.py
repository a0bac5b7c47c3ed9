"""Configuration dataclasses: ``MOGRPOConfig(trl.GRPOConfig)`` and ``MOScriptArguments(trl.ScriptArguments)``.

Recipes are flat YAML files read by ``trl.TrlParser`` with unknown keys failing. One source of truth per knob:
the weighting owns the objective weights, so TRL's ``reward_weights`` and ``multi_objective_aggregation`` may not
be set beside a weighting that owns them (use ``weighting_kwargs`` and ``advantage_estimator`` instead).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any

from huggingface_hub.utils import HFValidationError, validate_repo_id
from trl import GRPOConfig, ScriptArguments

from mo_align.advantages import ADVANTAGE_ESTIMATORS
from mo_align.deepspeed_setup import deepspeed_requested, prepare_deepspeed
from mo_align.objectives import parse_conditions, parse_roles, split_conditions
from mo_align.preferences.spec import parse_block
from mo_align.text import excerpt
from mo_align.weightings import WEIGHTINGS, validate_kwargs, weighting_class


logger = logging.getLogger("mo_align")


def _as_dict(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} must be a mapping or a JSON object string, got {excerpt(value)}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _check_finite(config: Any) -> None:
    """Every float field (and float list, e.g. ``reward_weights``) of a config must be finite: a NaN learning rate or
    an infinite KL coefficient would train on garbage and exit 0."""
    for f in fields(config):
        value = getattr(config, f.name, None)
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {v}")


def _check_seeds(config: Any) -> None:
    """``seed`` and ``data_seed`` within numpy's seed range: ``transformers.set_seed`` seeds numpy, which raised a
    traceback for -1 or 2**32 after the configuration had been accepted."""
    for name in ("seed", "data_seed"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not 0 <= value < 2**32:
            raise ValueError(f"{name} must be an integer in [0, 2**32 - 1] (numpy's seed range), got {excerpt(value)}")


def _check_mo_fields(args: Any) -> None:
    """mo_align's own evaluation and stopping fields (one line each)."""
    if not 0 < args.mo_eval_ci_level < 1:
        raise ValueError(f"mo_eval_ci_level must be in (0, 1), got {args.mo_eval_ci_level}")
    if isinstance(args.mo_nan_patience, bool) or not isinstance(args.mo_nan_patience, int) or args.mo_nan_patience < 1:
        raise ValueError(f"mo_nan_patience must be an integer >= 1 (training batches), got {args.mo_nan_patience!r}")
    if args.mo_eval_temperature < 0 or args.mo_eval_num_samples < 1:
        raise ValueError("mo_eval_temperature must be >= 0 and mo_eval_num_samples >= 1")
    if (
        not args.mo_eval_loss
        and args.load_best_model_at_end
        and args.metric_for_best_model in (None, "loss", "eval_loss")
    ):
        raise ValueError(
            "load_best_model_at_end selects on eval_loss, which mo_eval_loss: false does not compute; set "
            "metric_for_best_model (e.g. accuracy/mean) or mo_eval_loss: true"
        )


def _check_repo_id(repo_id: Any) -> None:
    """``hub_model_id`` must be a valid Hub repo id before anything runs (it is pasted into the model card's code)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"hub_model_id {excerpt(repo_id)} is not a valid Hub repo id: {first}") from None


@dataclass
class MOGRPOConfig(GRPOConfig):
    """[`trl.GRPOConfig`] plus the multi-objective knobs.

    Args:
        weighting (`str`, *optional*, defaults to `"linear"`):
            Registry key of the weighting strategy (see `mo_align.weightings.WEIGHTINGS`), ``"jd:<Name>"`` for any
            TorchJD Gramian weighting (`mo_align.weightings.jd.METHODS`, e.g. ``"jd:GradVac"``), or the dotted path
            ``pkg.module.ClassName`` of your own `mo_align.weightings.Weighting` subclass.
        weighting_kwargs (`dict` or `str`, *optional*):
            Hyperparameters of the weighting, splatted into its constructor; a JSON object on the CLI.
        advantage_estimator (`str`, *optional*, defaults to `"grpo"`):
            ``"grpo"`` (group baseline, TRL's ``scale_rewards``), ``"reinforce_pp"`` (REINFORCE++ token-weighted
            batch whitening, the paper's estimator) or ``"gdpo"`` (per-objective group z-scores then sum).
        gramian_space (`str`, *optional*, defaults to `"parameters"`):
            For gradient-based weightings (mgda, gradnorm, dynamic): differentiate the per-objective losses w.r.t.
            the parameters (``gramian_params``; K backward passes, K + 1 for dynamic or a parameter subset) or
            w.r.t. the per-token log-probabilities (``logprobs``: the cheap output-space mode, no extra pass
            through the model).
        gramian_params (`str`, *optional*):
            Regex selecting parameter names for the parameter-space Gram matrix; default every trainable parameter
            (with LoRA that is the adapters only).
        mo_diagnostics (`bool`, *optional*, defaults to `True`):
            Log the interference monitor (`mo_align.diagnostics`) every generation batch and write
            ``mo_summary.json`` (eval curves, weights, covariance EMAs, events) next to the checkpoints.
        mo_diagnostics_patience (`int`, *optional*, defaults to `10`): batches of negative covariance EMA before a
            ``negative_covariance`` event. mo_diagnostics_tolerance (`float`, defaults to `0.05`): accepted for older
            recipes; ``eval_drop`` events follow the interference rule on intervals (``mo_align.stats.interfering``).
        mo_eval_fixed_reference (`bool`, *optional*, defaults to `False`):
            For objectives that also score against a fixed reference (conciseness), use that score as
            ``eval_<objective>/mean``; both are logged anyway (``/fixed_ref`` and ``/running_mean``).
        mo_eval_temperature (`float`, *optional*, defaults to `0.0`):
            Temperature of the per-objective evaluation (``eval_strategy`` / ``eval_steps`` / ``eval_on_start``
            schedule it); 0 decodes greedily, as the paper does.
        mo_eval_num_samples (`int`, *optional*, defaults to `1`):
            Completions per eval prompt (use > 1 with a temperature for sampled evaluation).
        mo_eval_loss (`bool`, *optional*, defaults to `True`):
            Also run TRL's own evaluation loop at every evaluation, which gives ``eval_loss`` (transformers' default
            ``metric_for_best_model``) and TRL's ``eval_reward`` / ``eval_rewards/<objective>/mean``. It samples
            ``num_generations_eval`` completions per eval prompt on top of the per-objective decode; set false to
            skip that cost (then ``eval_loss`` is absent and cannot select the best model).
        mo_eval_ci_level (`float`, *optional*, defaults to `0.95`):
            Confidence level of the per-objective eval CIs (bootstrap over prompts, a prompt's samples kept together),
            of the paired CIs of Δ vs the start (each objective's and the fixed scalar's), which decide interference
            (an objective's below 0 while the fixed scalar's lies above 0) and the covariance-law check (significant
            up / down between evaluations).
        mo_nan_patience (`int`, *optional*, defaults to `3`):
            Stop the run (naming the objectives) when an objective is None/NaN on every completion of the first N
            training batches (it never applies), or every objective on N consecutive training batches (nothing can
            be scored): such batches train on nothing.
        mo_run_label (`str`, *optional*):
            The run's algorithm label in ``mo_summary.json`` and reports (default: the weighting's name); the lab
            labels its accuracy-only control, a linear weighting, this way.
        mo_dataset_name (`str`, *optional*):
            The dataset named in the run summary and the model card; ``mo_align.train`` sets it from
            ``dataset_name`` / ``dataset_path`` when the recipe does not.
        preference_conditioning (`dict` or `str`, *optional*):
            Preference-conditioned training (``mo_align.preferences``): a preference drawn per prompt (``sampler``:
            dirichlet / list / grid), stated in the prompt (``template``, ``placement``: system / prefix), and the
            prompt's group scored with it; a JSON object on the CLI. Keys in ``docs/preference_conditioning.md``.
        objective_roles (`dict` or `str`, *optional*):
            Objective -> role (``mo_align.objectives.roles``): ``train`` (default; combined by the weighting),
            ``monitor`` (scored, logged, evaluated and watched, not weighted) or ``eval`` (scored at evaluation
            only). The weighting's per-objective lists have one entry per ``train`` objective.
        objective_conditions (`dict` or `str`, *optional*):
            Objective -> ``{only_if: {objective, at_least, at_most}, otherwise}`` (``mo_align.objectives.conditions``).
            A recipe writes them inside ``reward_kwargs`` (``mo_align.train`` moves them here); set this field when
            building ``MOGRPOTrainer`` in code.
    """

    weighting: str = field(
        default="linear", metadata={"help": "Weighting strategy (registry key, or jd:<Name> for a TorchJD weighting)."}
    )
    weighting_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Weighting hyperparameters (mapping, or JSON string on the CLI)."}
    )
    advantage_estimator: str = field(
        default="grpo", metadata={"help": "grpo | reinforce_pp | gdpo", "choices": list(ADVANTAGE_ESTIMATORS)}
    )

    gramian_space: str = field(
        default="parameters",
        metadata={"help": "Gram matrix of per-objective gradients: 'parameters' or 'logprobs' (cheap, output space)."},
    )
    gramian_params: str | None = field(
        default=None, metadata={"help": "Regex of parameter names for the parameter-space Gram (default: trainable)."}
    )
    mo_diagnostics: bool = field(default=True, metadata={"help": "Log the interference monitor (mo/cov/... etc.)."})
    mo_diagnostics_patience: int = field(
        default=10, metadata={"help": "Batches of negative covariance EMA before an interference event."}
    )
    mo_diagnostics_tolerance: float = field(
        default=0.05, metadata={"help": "Unused (kept for older recipes): interference is decided by intervals."}
    )
    mo_eval_fixed_reference: bool = field(
        default=False,
        metadata={"help": "Evaluate length objectives against their fixed reference (default: the running mean)."},
    )
    mo_eval_temperature: float = field(
        default=0.0, metadata={"help": "Sampling temperature of the per-objective evaluation (0 = greedy)."}
    )
    mo_eval_num_samples: int = field(
        default=1, metadata={"help": "Completions per eval prompt in the per-objective evaluation."}
    )
    mo_eval_loss: bool = field(
        default=True, metadata={"help": "Also run TRL's evaluation loop (eval_loss, eval_reward) at each evaluation."}
    )
    mo_eval_ci_level: float = field(
        default=0.95, metadata={"help": "Confidence level of eval CIs and of significant-change verdicts."}
    )
    mo_nan_patience: int = field(
        default=3,
        metadata={
            "help": "Stop when an objective is None/NaN on every completion of the first N training batches, or "
            "every objective on N consecutive ones."
        },
    )
    mo_run_label: str | None = field(
        default=None, metadata={"help": "Algorithm label of the run in summaries and reports (default: weighting)."}
    )
    mo_dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset named in the run summary and the model card (set by mo_align.train)."}
    )
    preference_conditioning: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Preference-conditioned training: sampler, template, placement (mapping)."}
    )

    # ---- objective roles and conditions (mo_align.objectives) ----
    objective_roles: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Objective -> role: train (default), monitor or eval."}
    )
    objective_conditions: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Objective -> {only_if, otherwise} (a recipe sets them in reward_kwargs)."}
    )

    _VALID_DICT_FIELDS = [  # noqa: RUF012
        *GRPOConfig._VALID_DICT_FIELDS,
        "weighting_kwargs",
        "objective_roles",
        "objective_conditions",
        "preference_conditioning",
    ]

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_seeds(self)
        if self.hub_model_id is not None:
            _check_repo_id(self.hub_model_id)
        self.weighting_kwargs = _as_dict(self.weighting_kwargs, "weighting_kwargs")
        strategy = weighting_class(self.weighting)  # a registry key or jd:<Name>; ValueError naming the valid ones
        validate_kwargs(strategy, self.weighting_kwargs)
        raw_conditioning = _as_dict(self.preference_conditioning, "preference_conditioning")
        self.preference_conditioning = parse_block(
            raw_conditioning, strategy, self.seed, self.weighting
        )  # mo_align.preferences
        self.objective_roles = parse_roles(_as_dict(self.objective_roles, "objective_roles")) or None  # objectives
        conditions = _as_dict(self.objective_conditions, "objective_conditions")
        parse_conditions(conditions, None, "objective_conditions")  # names are checked against reward_funcs later
        self.objective_conditions = conditions or None
        untrained = sorted(k for k, v in (self.objective_roles or {}).items() if v != "train")
        if self.preference_conditioning and untrained:  # the preference covers every objective a prompt states
            raise ValueError(
                f"preference_conditioning cannot be combined with objective_roles that take {untrained} out of the "
                "weighting yet: the drawn preference has one weight per objective; drop one of the two blocks"
            )
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"unknown advantage_estimator {self.advantage_estimator!r}; choose from {list(ADVANTAGE_ESTIMATORS)}"
            )
        if self.gramian_space not in ("parameters", "logprobs"):
            raise ValueError(f"gramian_space must be 'parameters' or 'logprobs', got {self.gramian_space!r}")
        _check_mo_fields(self)
        if self.num_generations is None or self.num_generations < 2:  # TRL's own check divides by it
            raise ValueError(f"num_generations must be >= 2 for group baselines, got {self.num_generations}")
        if strategy.owns_weights and self.reward_weights is not None:
            raise ValueError(
                f"reward_weights is set but weighting {self.weighting!r} owns the objective weights; "
                "pass them as weighting_kwargs (e.g. {weights: [...]}) instead"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "multi_objective_aggregation is owned by mo_align; use advantage_estimator: gdpo for "
                "normalize_then_sum"
            )
        if deepspeed_requested(self.deepspeed):  # before transformers sets DeepSpeed up
            prepare_deepspeed()  # a stale extension build lock fails here; no CPU comm-op build (deepspeed_setup)
        super().__post_init__()
        strategy.check_config(self, self.weighting_kwargs)  # what the strategy itself refuses (CTWA: the loss)
        layout = strategy.declared_needs(self.weighting_kwargs).layout_conflict(
            self.weighting, self.steps_per_generation, self.num_iterations, self.gradient_accumulation_steps
        )
        if layout:
            raise ValueError(layout)

    @classmethod
    def from_grpo_config(cls, args: GRPOConfig, num_objectives: int) -> tuple[MOGRPOConfig, str]:
        """A ``MOGRPOConfig`` holding every setting of a plain ``trl.GRPOConfig``, and a sentence saying how TRL's
        multi-reward knobs were mapped: ``reward_weights`` (default: ones, as TRL) become ``linear`` weights and
        ``multi_objective_aggregation`` the estimator (``sum_then_normalize`` -> ``grpo``, ``normalize_then_sum``
        -> ``gdpo``). Both give TRL's advantages exactly (see ``mo_align.weightings.linear``). The mo_align fields
        take their defaults; ``args`` itself is not modified."""
        weights = [1.0] * num_objectives if args.reward_weights is None else [float(w) for w in args.reward_weights]
        estimator = {"sum_then_normalize": "grpo", "normalize_then_sum": "gdpo"}.get(args.multi_objective_aggregation)
        if estimator is None:
            raise ValueError(f"unknown multi_objective_aggregation {args.multi_objective_aggregation!r}")
        validate_kwargs(WEIGHTINGS["linear"], {"weights": weights})
        WEIGHTINGS["linear"](num_objectives, weights=weights)  # wrong length or negative weights fail here, early
        # Copy the finished (post-__post_init__) state: re-running GRPOConfig.__post_init__ on derived fields such
        # as generation_batch_size and steps_per_generation would reject them as conflicting.
        new = cls.__new__(cls)
        new.__dict__.update(args.__dict__)
        grpo_fields = {f.name for f in fields(GRPOConfig)}
        for f in fields(cls):
            if f.init and f.name not in grpo_fields:
                setattr(new, f.name, f.default_factory() if callable(f.default_factory) else f.default)
        new.weighting, new.weighting_kwargs, new.advantage_estimator = "linear", {"weights": weights}, estimator
        new.reward_weights, new.multi_objective_aggregation = None, "sum_then_normalize"
        message = (
            f"trl.GRPOConfig given: reward_weights {weights} -> weighting: linear with these weights; "
            f"multi_objective_aggregation {args.multi_objective_aggregation!r} -> advantage_estimator: {estimator}"
        )
        return new, message

    def __getstate__(self) -> dict[str, Any]:
        # transformers pickles the args into every checkpoint's training_args.bin and uploads it with push_to_hub:
        # never let a hub token travel with it (export HF_TOKEN instead of setting hub_token in a recipe).
        state = dict(self.__dict__)
        state["hub_token"] = None
        return state


@dataclass
class MOScriptArguments(ScriptArguments):
    """Script arguments: data and objectives.

    Args:
        reward_funcs (`list[str]`):
            Objectives, in order: keys of `mo_align.rewards.REWARDS` or dotted paths ``pkg.module.function``.
        reward_kwargs (`dict` or `str`, *optional*):
            Per-reward keyword arguments keyed by reward name, e.g. ``{conciseness: {reference_length: 20}}``;
            ``only_if`` and ``otherwise`` there condition the objective on another one's reward
            (``mo_align.objectives.conditions``) and never reach the reward function.
        dataset_path (`str`, *optional*):
            Local dataset: a directory of ``{train,val,test}.parquet`` / ``.jsonl`` files, or ``synthetic`` for the
            built-in arithmetic task. Takes precedence over ``dataset_name``.
        dataset_kwargs (`dict`, *optional*):
            Keyword arguments of the synthetic generator (``n_train``, ``n_eval``, ``seed``).
        eval_split (`str`, *optional*):
            Kept for old recipes: names the evaluation split instead of TRL's ``dataset_test_split`` (which is used
            whenever ``eval_strategy`` is not ``"no"``). ``validation`` and ``val`` name the same local split.
        continue_finished_run (`bool`, *optional*, defaults to `False`):
            ``mo_align.train`` on an ``output_dir`` that holds a finished run (``mo_finished.json``) does nothing
            and says so; set true to resume its newest checkpoint and train on up to ``max_steps`` (raise it), after
            which the final model is replaced. A checkpoint already at ``max_steps`` is restored, never trained on.
    """

    reward_funcs: list[str] = field(default_factory=list, metadata={"help": "Objectives, in order."})
    reward_kwargs: dict[str, Any] | str | None = field(default=None, metadata={"help": "Per-reward kwargs."})
    dataset_path: str | None = field(default=None, metadata={"help": "Local data dir, or 'synthetic'."})
    dataset_kwargs: dict[str, Any] | str | None = field(default=None, metadata={"help": "Synthetic data kwargs."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Evaluation split; default TRL's dataset_test_split when evaluating."}
    )
    continue_finished_run: bool = field(
        default=False,
        metadata={"help": "Train on in an output_dir that holds a finished run (else a re-run does nothing)."},
    )

    def __post_init__(self) -> None:
        if hasattr(super(), "__post_init__"):
            super().__post_init__()
        self.reward_kwargs = _as_dict(self.reward_kwargs, "reward_kwargs")
        self.dataset_kwargs = _as_dict(self.dataset_kwargs, "dataset_kwargs")
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        if not self.reward_funcs:
            raise ValueError("reward_funcs is empty: name at least one objective")
        unknown = set(self.reward_kwargs) - set(self.reward_funcs)
        if unknown:
            raise ValueError(f"reward_kwargs names rewards that are not in reward_funcs: {sorted(unknown)}")
        # only_if / otherwise are mo_align's (mo_align.objectives.conditions), checked here against reward_funcs
        parse_conditions(split_conditions(self.reward_kwargs)[1], self.reward_funcs, "reward_kwargs")


def resolve_config(args: Any, model: Any, num_objectives: int) -> MOGRPOConfig:
    """The trainer's ``args`` as a ``MOGRPOConfig``, accepting what ``trl.GRPOTrainer`` accepts.

    ``None`` builds TRL's default (``output_dir`` ``<model name>-GRPO``) with linear weights of ones, as TRL's default
    ``reward_weights``; a plain ``trl.GRPOConfig`` is mapped by :meth:`MOGRPOConfig.from_grpo_config` (logged).
    """
    if isinstance(args, MOGRPOConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "name_or_path", "")
        name = str(name).rstrip("/").split("/")[-1] or "model"
        return MOGRPOConfig(output_dir=f"{name}-GRPO", weighting_kwargs={"weights": [1.0] * num_objectives})
    if isinstance(args, GRPOConfig):
        config, message = MOGRPOConfig.from_grpo_config(args, num_objectives)
        logger.info(message)
        return config
    raise TypeError(f"args must be a MOGRPOConfig or a trl.GRPOConfig, got {type(args).__name__}")
