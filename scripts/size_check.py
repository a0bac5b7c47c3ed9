"""Size check of the package: no module over MAX_MODULE lines, no function over MAX_FUNCTION lines.

``python scripts/size_check.py [ROOT]`` prints every offender (``path: N lines`` / ``path:line name: N lines``) and
exits 1 if there is any; run by ``make lint``. A function's size counts its whole body, docstring included; nested
functions count inside their parent and are also checked on their own.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


MAX_MODULE, MAX_FUNCTION = 400, 60


def offenders(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        n_lines = len(text.splitlines())
        if n_lines > MAX_MODULE:
            out.append(f"{path}: module of {n_lines} lines (max {MAX_MODULE})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION:
                    out.append(f"{path}:{node.lineno} {node.name}: function of {size} lines (max {MAX_FUNCTION})")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else Path(__file__).resolve().parents[1] / "mo_align")
    found = offenders(root)
    for line in found:
        sys.stdout.write(line + "\n")
    sys.stdout.write(f"size check of {root}: {len(found)} offender(s)\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
