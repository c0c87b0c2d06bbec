"""Progress people can follow, in a terminal and in a log file.

In a terminal: a tqdm bar (count, total, rate, ETA). When stderr is not a terminal (`dvc queue`
writes its logs to files, CI, `2> log`): one plain line every few seconds instead of a bar,

    baseline: 120/470 (26%) 12.1s elapsed, ETA 35.3s, epoch 1/2

so a log shows where a long stage is and when it will end. Output only: iterating through a
Progress yields exactly the items of the wrapped iterable, so no number changes.

The plain lines share one clock across all loops of the process: a stage that runs many short
loops one after the other (one per epoch) still prints a line every `ADVGAME_PROGRESS_EVERY`
seconds (default 5), and a stage shorter than that prints none.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TextIO

_last_line = time.monotonic()  # the process's last plain line (import time ~ stage start)


def every_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("ADVGAME_PROGRESS_EVERY", "5")))
    except ValueError:
        return 5.0


def fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class Progress:
    """Wraps an iterable (or counts `update()` calls) and reports count, total and ETA."""

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 stream: TextIO | None = None, every: float | None = None, bar: bool | None = None):
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.every = every_seconds() if every is None else every
        self.n = 0
        self.postfix = ""
        self.start = time.monotonic()
        is_tty = getattr(self.stream, "isatty", lambda: False)()
        self._bar = None
        if bar if bar is not None else is_tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=desc, total=total, leave=False, file=self.stream)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s
        if self._bar is not None:
            self._bar.set_postfix_str(s, refresh=refresh)
        else:
            self._maybe_line()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._maybe_line()

    def line(self) -> str:
        """The plain line: count, total, share, elapsed and the ETA (when the total is known)."""
        elapsed = time.monotonic() - self.start
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{fmt_seconds(elapsed)} elapsed")
        if self.total and self.n:
            parts[-1] += f", ETA {fmt_seconds(elapsed / self.n * max(self.total - self.n, 0))}"
        if self.postfix:
            parts[-1] += f", {self.postfix}"
        return " ".join(parts)

    def _maybe_line(self) -> None:
        global _last_line
        now = time.monotonic()
        if now - _last_line >= self.every:
            _last_line = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
