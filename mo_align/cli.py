"""The ``mo-align`` console script: ``mo-align train --config recipes/<model>/<algo>.yaml [overrides]``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


USAGE = """usage: mo-align <command> [args]

commands:
  train --config FILE [--key value ...]   train with a recipe (same as python -m mo_align.train)
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from mo_align.train import cli

        cli(rest)
        return 0
    sys.stderr.write(f"mo-align: unknown command {command!r}\n{USAGE}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
