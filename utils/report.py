"""Regenerate the result tables inside README.md from the table files the scripts write.

A block in the README looks like::

    <!-- BEGIN results/mnist_comparison/table.md -->
    ...generated, do not edit...
    <!-- END results/mnist_comparison/table.md -->

and is replaced by the current content of that file (a path relative to the README's folder),
which the homework scripts generate from their JSON results (a file that is not markdown, such as
a benchmark's output, is shown verbatim in a text block). Only full-run results reach the README:
a table made by a reduced run (``--quick``, ``--budget``, ``--epoch-fraction`` < 1) starts with
``REDUCED_MARK``; its block is left as it was, with a warning. Run ``python -m utils.report``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from utils.comparison_utils import REDUCED_MARK

BLOCK = re.compile(r"(<!-- BEGIN (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- END (?P=path) -->)", re.S)


class ReportError(Exception):
    """A file the README is made from cannot be read; the message is one line for the user."""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not UTF-8 text; regenerate it with the script that writes it") from None
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None


def update_readme(readme: Path) -> tuple[list[str], list[str]]:
    """Rewrite every marked block of ``readme``; return the paths of the missing table files and
    of the tables left out because they come from a reduced run."""
    readme = Path(readme)
    root = readme.parent
    missing: list[str] = []
    reduced: list[str] = []

    def fill(m: re.Match) -> str:
        table = root / m.group("path")
        if not table.is_file():
            missing.append(m.group("path"))
            return m.group(0)
        body = _read(table).rstrip("\n")
        if body.startswith(REDUCED_MARK):
            reduced.append(m.group("path"))
            return m.group(0)
        if table.suffix != ".md":  # plain text (benchmark output): show it verbatim
            body = "```text\n" + body + "\n```"
        return m.group(1) + body + "\n" + m.group(4)

    text = _read(readme)
    new = BLOCK.sub(fill, text)
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return missing, reduced


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    args = p.parse_args()
    if not args.readme.is_file():
        print(f"error: {args.readme} not found", file=sys.stderr)
        sys.exit(2)
    try:
        missing, reduced = update_readme(args.readme)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for path in missing:
        print(f"warning: {path} does not exist yet (run the script that makes it)", file=sys.stderr)
    for path in reduced:
        print(f"warning: {path} comes from a reduced run (--quick, --budget or --epoch-fraction); "
              "the README keeps its previous table", file=sys.stderr)
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
