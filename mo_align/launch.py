"""How a run was started, and starting it under ``accelerate launch``.

``typed_command()`` is the command line the user typed (``python -m mo_align.train ...``, ``mo-align train ...``),
recorded in the run summary and the model card. ``accelerate_command()`` builds the ``accelerate launch`` line that
``mo-align train --accelerate_config NAME|FILE`` runs, as ``trl grpo --accelerate_config`` does.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml

from mo_align.deepspeed_setup import ExtensionLockError, check_extension_locks
from mo_align.extras import require


# Set by `mo-align train --accelerate_config ...` for the processes it starts: their own argv is accelerate's.
TYPED_COMMAND_ENV = "MO_ALIGN_TYPED_COMMAND"


def typed_command(argv: Sequence[str] | None = None, main_module: object = None) -> str:
    """The command line as typed: ``python -m pkg.mod args`` for a module run, the script's name for a console
    script, ``python path args`` for a file; ``$MO_ALIGN_TYPED_COMMAND`` when a launcher recorded it."""
    recorded = os.environ.get(TYPED_COMMAND_ENV)
    if recorded:
        return recorded
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    main = sys.modules.get("__main__") if main_module is None else main_module
    spec = getattr(main, "__spec__", None)
    python = os.path.basename(sys.executable) or "python"
    rest = [shlex.quote(a) for a in argv[1:]]
    if spec is not None and getattr(spec, "name", None) not in (None, "__main__"):
        module = spec.name.removesuffix(".__main__")
        return " ".join([python, "-m", module, *rest])
    script = argv[0]
    if script.endswith(".py"):
        return " ".join([python, shlex.quote(script), *rest])
    return " ".join([os.path.basename(script), *rest])  # a console script (mo-align, accelerate, ...)


# ---- mo-align train --accelerate_config ----------------------------------------------------------------------------
# The launch configs are package data (mo_align/resources/configs; `configs/` in the repository links to it), so a
# wheel install resolves the same names as a checkout.
CONFIG_ROOT = Path(str(resources.files("mo_align") / "resources" / "configs"))
ACCELERATE_DIR = CONFIG_ROOT / "accelerate"
# TRL's names (`trl grpo --accelerate_config single_gpu|multi_gpu|zero1|zero2|zero3|fsdp1|fsdp2`) all resolve;
# `multi_gpu` is TRL's name for data parallelism, ours is ddp.
ACCELERATE_ALIASES = {"multi_gpu": "ddp"}
# accelerate launch's own options that `mo-align train` passes on to it (each takes one value)
LAUNCHER_FLAGS = ("--num_processes", "--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port")


def accelerate_config_names() -> list[str]:
    """Every name ``--accelerate_config`` accepts (besides a YAML file)."""
    return sorted([p.stem for p in ACCELERATE_DIR.glob("*.yaml")] + list(ACCELERATE_ALIASES))


class LaunchError(ValueError):
    """A bad --accelerate_config, or a command line that must not run (reported on one line)."""


def hub_token_flag(argv: Sequence[str]) -> str | None:
    """The first argument that sets ``hub_token`` in any spelling argparse accepts or would once have accepted:
    ``--hub_token``, ``--hub-token``, either with ``=VALUE``, or a prefix such as ``--hub_tok`` (argparse matches
    abbreviations); returned without its value. ``None`` when there is none."""
    for arg in argv:
        flag = arg.partition("=")[0]
        name = flag[2:].replace("-", "_").lower() if flag.startswith("--") else ""
        if len(name) >= len("hub_t") and "hub_token".startswith(name):
            return flag
    return None


def refuse_hub_token(argv: Sequence[str]) -> None:
    """A Hub token on the command line is refused before anything runs: trackers record the command line (wandb's
    run metadata, which ``wandb sync`` uploads), so do the run summary, the model card and shell history."""
    flag = hub_token_flag(argv)
    if flag is not None:
        raise LaunchError(
            f"{flag} on the command line is recorded by trackers (wandb, trackio), the run summary and shell "
            "history; export HF_TOKEN instead"
        )


def resolve_accelerate_config(value: str, workdir: Path) -> Path:
    """A named config (:func:`accelerate_config_names`: ``cpu``, ``single_gpu``, ``ddp`` = ``multi_gpu``, ``zero1``,
    ``zero2``, ``zero3``, ``fsdp1``, ``fsdp2``) from the package's ``configs/accelerate/``, or a YAML file.

    A DeepSpeed config whose ``deepspeed_config_file`` is relative to the repository (``configs/deepspeed/...``) and
    not found from the current directory is rewritten into ``workdir`` with the absolute path, so it launches from
    anywhere, a wheel install included.
    """
    name = ACCELERATE_ALIASES.get(value, value)
    path = Path(value)
    if not path.suffix:
        path = ACCELERATE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise LaunchError(
            f"--accelerate_config {value!r}: no such file; use one of {accelerate_config_names()} or a YAML file"
        )
    config = yaml.safe_load(path.read_text()) or {}
    if config.get("distributed_type") == "DEEPSPEED":
        require("deepspeed", f"--accelerate_config {value}")

        try:  # refused here once, rather than by every rank after the launch
            check_extension_locks()
        except ExtensionLockError as exc:
            raise LaunchError(str(exc)) from None
        ds = config.get("deepspeed_config") or {}
        file = ds.get("deepspeed_config_file")
        if file and not Path(file).is_absolute() and not Path(file).exists():
            for base in (path.parent, CONFIG_ROOT.parent):
                if (base / file).exists():
                    ds["deepspeed_config_file"] = str((base / file).resolve())
                    break
            else:
                raise LaunchError(f"{path}: deepspeed_config_file {file!r} not found")
            path = workdir / path.name
            path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def accelerate_command(argv: Sequence[str], workdir: Path) -> tuple[list[str], list[str]] | None:
    """For ``mo-align train ARGS``: ``(command, shown)`` running ``accelerate launch`` when ARGS hold
    ``--accelerate_config``, else None (train in this process). ``--num_processes`` and the other launcher options
    go to accelerate; everything else to ``mo_align.train``."""
    argv = list(argv)
    refuse_hub_token(argv)  # before accelerate's command line (printed, and visible to every user in ps) holds it
    launcher: list[str] = []
    config = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        flag, _, inline = argv[i].partition("=")
        if flag == "--accelerate_config" or flag in LAUNCHER_FLAGS:
            if inline:
                value, i = inline, i + 1
            elif i + 1 < len(argv):
                value, i = argv[i + 1], i + 2
            else:
                raise LaunchError(f"{flag} needs a value")
            if flag == "--accelerate_config":
                config = value
            else:
                launcher += [flag, value]
        else:
            rest.append(argv[i])
            i += 1
    if config is None:
        if launcher:
            raise LaunchError(f"{launcher[0]} needs --accelerate_config")
        return None
    path = resolve_accelerate_config(config, workdir)
    tail = ["--config_file", str(path), *launcher, "-m", "mo_align.train", *rest]
    return [sys.executable, "-m", "accelerate.commands.launch", *tail], ["accelerate", "launch", *tail]
