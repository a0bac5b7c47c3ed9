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
