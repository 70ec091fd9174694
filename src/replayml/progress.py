"""Progress for long steps: a Rich status on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Steps:
    """Announce long steps; shows a spinner only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s ...", name)
        if self.enabled:
            from rich.console import Console

            with Console(stderr=True).status(name):
                yield
        else:
            yield
        self.timings[name] = time.perf_counter() - start
        log.info("%s: %.2f s", name, self.timings[name])
