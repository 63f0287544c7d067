"""Progress of a run, and of a grid of runs: a bar on a terminal, a plain line every so often elsewhere.

When the output is a file or a pipe (a job on a cluster, ``compare``'s logs), a long run would otherwise say nothing
between evaluations: :class:`Progress` prints one line at most every ``every`` seconds with the step, the training
loss since the last evaluation, the throughput, the elapsed time and an estimate of the time left at the rate so far.

Example:
    >>> duration(3725.0), time_left(done=25, total=100, elapsed=60.0)
    ('1h02m', 180.0)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["EVERY", "Progress", "duration", "time_left"]

EVERY = 30.0  # seconds between two plain progress lines


def duration(seconds: float) -> str:
    """``seconds`` as ``"42s"``, ``"6m23s"`` or ``"1h02m"``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def time_left(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left to reach ``total`` at the rate of the ``done`` units that took ``elapsed`` seconds (None before
    the first unit)."""
    if done <= 0:
        return None
    return elapsed / done * max(total - done, 0)


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.1f}"


class Progress:
    """Training progress: a tqdm bar on a terminal, else a line at most every ``every`` seconds (none if ``quiet``).

    Example:
        >>> p = Progress(total=100, initial=0, quiet=True, per_step=(8192, "tokens"))
        >>> p.step_now = 25
        >>> p.line(p.start + 10.0, loss=3.2)
        'step 25/100 (25%) | loss 3.2000 | 2.50 steps/s | 20.5k tokens/s | elapsed 10s, about 30s left'


    Args:
        total: the run's steps; ``initial``: the steps already done (a resumed run).
        per_step: what one step processes, e.g. ``(8192, "tokens")``, for the throughput; None: steps/s only.
        every: seconds between two lines (default :data:`EVERY`).
    """

    def __init__(
        self,
        total: int,
        initial: int,
        quiet: bool,
        per_step: tuple[int, str] | None = None,
        every: float | None = None,
    ) -> None:
        self.quiet, self.total, self.per_step = quiet, total, per_step
        self.every = EVERY if every is None else every
        self.step_now, self.start_step = initial, initial
        self.start = self.last = time.perf_counter()
        self.bar = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def step(self, loss: Callable[[], float] | None = None) -> None:
        """One step done; ``loss`` (read only when a line is printed: it may wait for the device) gives the training
        loss to show (the trainer's: since the last evaluation)."""
        self.step_now += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.perf_counter()
        if self.quiet or now - self.last < self.every:
            return
        self.last = now
        print(self.line(now, None if loss is None else loss()), flush=True)

    def line(self, now: float, loss: float | None) -> str:
        """The plain progress line at time ``now``."""
        done, elapsed = self.step_now - self.start_step, now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"step {self.step_now}/{self.total} ({100 * self.step_now / max(self.total, 1):.0f}%)"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        parts.append(f"{rate:.2f} steps/s")
        if self.per_step is not None:
            count, unit = self.per_step
            parts.append(f"{_si(rate * count)} {unit}/s")
        left = time_left(done, self.total - self.start_step, elapsed)
        parts.append(f"elapsed {duration(elapsed)}" + (f", about {duration(left)} left" if left is not None else ""))
        return " | ".join(parts)

    def eval(self, text: str, postfix: dict[str, str]) -> None:
        """An evaluation's line (and, on a terminal, the bar's postfix)."""
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.write(text)
        elif not self.quiet:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
