"""Progress of long work on stderr: a line redrawn in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts work done out of a known total (or an open-ended count) and shows it without flooding the output."""

    def __init__(
        self, label: str, total: int | None = None, *, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = self._stream.isatty()
        # A terminal gets ten redraws a second; a log file a line every five seconds.
        self._every = 0.1 if self._tty else 5.0
        self._last = time.monotonic()
        self._shown = False

    def text(self) -> str:
        """What the progress line says now."""
        if self.total:
            return f"{self.label}: {self.done}/{self.total} ({100 * self.done // self.total}%)"
        return f"{self.label}: {self.done}"

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more units done."""
        self.done += count
        now = time.monotonic()
        if self._enabled and now - self._last >= self._every:
            self._last = now
            self._show()

    def finish(self) -> None:
        """Show the final count (on a terminal, end the redrawn line)."""
        if self._enabled and (self._shown or not self._tty):
            self._show()
        if self._enabled and self._tty and self._shown:
            self._stream.write("\n")
            self._stream.flush()

    def _show(self) -> None:
        self._shown = True
        if self._tty:
            self._stream.write("\r\x1b[2K" + self.text())
        else:
            self._stream.write(self.text() + "\n")
        self._stream.flush()
