"""Plain-text tables and JSON lines on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from .connect import CommandError


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns in ``right`` (numbers) aligned right."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def say(text: str = "") -> None:
    """A line on stdout, flushed (pipes see it at once)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def json_line(value: Any) -> None:
    """One JSON document on one line of stdout."""
    say(json.dumps(value, sort_keys=True, default=str))


def note(text: str) -> None:
    """A remark for the operator on stderr (stdout stays parseable)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def confirm(question: str, yes: bool) -> None:
    """Ask on the terminal unless ``yes``; without a terminal, refuse and say to add --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError(f"{question} Not a terminal, so not asking: add --yes")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CommandError("cancelled")
