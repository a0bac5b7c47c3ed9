"""Optional dependencies: which ``pip install 'mo_align[EXTRA]'`` provides a feature, and a clear error when missing.

``make install`` installs every extra (the tested set, exact pins); ``pip install mo_align`` installs the core
(training on one process or DDP, every weighting and reward, reports) and each extra adds one feature, as TRL does.
"""

from __future__ import annotations

import importlib.util


# import name -> (extra, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "deepspeed": ("deepspeed", "DeepSpeed (ZeRO-3 launch configs, configs/accelerate/zero3.yaml)"),
    "wandb": ("wandb", "report_to: wandb"),
    "trackio": ("trackio", "report_to: trackio"),
    "bitsandbytes": ("quantization", "load_in_4bit / load_in_8bit"),
}


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed (the message names the extra)."""


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules without a spec (e.g. a test double)
        return True


def require(module: str, feature: str | None = None) -> None:
    """Raise :class:`MissingExtraError` naming the extra when ``module`` cannot be imported."""
    if is_installed(module):
        return
    extra, default_feature = EXTRAS.get(module, (module, module))
    raise MissingExtraError(
        f"{feature or default_feature} needs the {module!r} package: pip install 'mo_align[{extra}]'"
    )


def check_report_to(report_to: list[str] | str | None) -> None:
    """Every tracker named in ``report_to`` (TRL/transformers names) is installed."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name in ("wandb", "trackio"):
            require(name, f"report_to: {name}")
