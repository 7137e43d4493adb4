"""Regenerate the result tables inside README.md from the table files the scripts write.

A block in the README looks like::

    <!-- BEGIN results/mnist_comparison/table.md -->
    ...generated, do not edit...
    <!-- END results/mnist_comparison/table.md -->

and is replaced by the current content of that file (a path relative to the README's folder),
which the homework scripts generate from their JSON results (a file that is not markdown, such as
a benchmark's output, is shown verbatim in a text block). Run ``python -m utils.report``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- BEGIN (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- END (?P=path) -->)", re.S)


def update_readme(readme: Path) -> list[str]:
    """Rewrite every marked block of ``readme``; return the paths of missing table files."""
    readme = Path(readme)
    root = readme.parent
    missing: list[str] = []

    def fill(m: re.Match) -> str:
        table = root / m.group("path")
        if not table.is_file():
            missing.append(m.group("path"))
            return m.group(0)
        body = table.read_text().rstrip("\n")
        if table.suffix != ".md":  # plain text (benchmark output): show it verbatim
            body = "```text\n" + body + "\n```"
        return m.group(1) + body + "\n" + m.group(4)

    text = readme.read_text()
    new = BLOCK.sub(fill, text)
    if new != text:
        readme.write_text(new)
    return missing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    args = p.parse_args()
    if not args.readme.is_file():
        sys.exit(f"error: {args.readme} not found")
    missing = update_readme(args.readme)
    for path in missing:
        print(f"warning: {path} does not exist yet (run the script that makes it)", file=sys.stderr)
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
