"""What else ran on this host while a stage worked: a stage's body seconds are its cost only when
it had the cores to itself (a test suite or a second `dvc repro` beside it made the game stages
3.4x slower here: `alt` 1,042 s beside other work, 305 s alone, same bytes out).

`advgame warm` (the way `make study` runs) samples the number of runnable threads in the kernel
(/proc/loadavg's fourth field, read at that instant) every PERIOD_S into LOG. The cost table
(pipeline.cost) reads the samples that fall inside each stage's body: `others` = their mean minus
the stage's own threads (run.threads) minus the sampler itself, at least 0. A stage with
`others` >= CONTENDED shared its cores; its body seconds overstate its cost, and rerunning it
alone (`dvc repro -f -s STAGE`: the same bytes) measures it again. Linux only; elsewhere, and for
stages run without the sampler, `others` is None (not measured).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOG = "reports/timing/load.log"  # "unix-time runnable" per line; beside the timings, untracked
LOADAVG = "/proc/loadavg"
RUN = "run"  # the line "unix-time run" marks the start of a sampled command
PERIOD_S = 2.0
CONTENDED = 0.5   # other runnable threads on average during a body: it shared the cores
KEEP_BYTES = 4_000_000  # the log is cut to its newer half beyond this


def runnable(path: str = LOADAVG) -> int | None:
    """The kernel's runnable threads now (this reader included), or None where it cannot tell."""
    try:
        return int(Path(path).read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def sampling(log: str | Path = LOG, period: float = PERIOD_S, source: str = LOADAVG) -> Iterator[None]:
    """Append a sample to `log` every `period` seconds while the block runs (nothing where
    `source` cannot be read)."""
    if runnable(source) is None:
        yield
        return
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists() and log.stat().st_size > KEEP_BYTES:
        lines = log.read_text().splitlines(keepends=True)
        log.write_text("".join(lines[len(lines) // 2:]))
    stop = threading.Event()

    def run():
        with log.open("a") as f:
            f.write(f"{time.time():.1f} {RUN}\n")  # where a run began: the cost table's wall starts there
            while not stop.is_set():
                if (n := runnable(source)) is not None:
                    f.write(f"{time.time():.1f} {n}\n")
                    f.flush()
                stop.wait(period)

    t = threading.Thread(target=run, name="advgame-load", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(period + 1)


def samples(log: str | Path = LOG) -> list[tuple[float, int]]:
    """(time, runnable) of every sample in `log`, oldest first; [] where there is none."""
    try:
        text = Path(log).read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        try:
            out.append((float(parts[0]), int(parts[1])))
        except (IndexError, ValueError):  # a line cut by a kill
            continue
    return sorted(out)


def runs(log: str | Path = LOG) -> list[float]:
    """When each sampled command (a `dvc repro` under `advgame warm`) began, oldest first."""
    try:
        text = Path(log).read_text()
    except OSError:
        return []
    return sorted(float(p[0]) for line in text.splitlines() if len(p := line.split()) == 2 and p[1] == RUN)


def others(load: list[tuple[float, int]], start: float, end: float, threads: int) -> float | None:
    """The mean number of other runnable threads between `start` and `end` (a stage's body): the
    samples' mean minus the stage's `threads` and the sampler; None with no sample there."""
    inside = [n for t, n in load if start <= t <= end]
    if not inside:
        return None
    return round(max(0.0, sum(inside) / len(inside) - threads - 1), 2)
