"""Functions over 80 lines and classes over 300 in airgap/ (the style limits), one per line.

    python3 scripts/sizes.py [DIR]
"""

import ast
import pathlib
import sys

MAX_FUNCTION, MAX_CLASS = 80, 300


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "airgap")
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            if lines > limit:
                kind = "class" if isinstance(node, ast.ClassDef) else "def"
                print(f"{kind:<5} {path}:{node.lineno} {node.name} {lines} lines (limit {limit})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
