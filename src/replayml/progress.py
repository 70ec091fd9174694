"""Progress for long steps: a Rich status on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


#: seconds between a long step's progress lines when stderr is not a terminal
NOTE_EVERY_S = 30.0


class Steps:
    """Announce long steps; shows a spinner only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None, note_every: float = NOTE_EVERY_S) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.note_every = note_every
        self.timings: dict[str, float] = {}
        self._current: str | None = None
        self._status: Any = None
        self._last_note = 0.0

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s ...", name)
        self._current, self._last_note = name, start
        try:
            if self.enabled:
                from rich.console import Console

                with Console(stderr=True).status(name) as status:
                    self._status = status
                    yield
            else:
                yield
        finally:
            self._current, self._status = None, None
        self.timings[name] = time.perf_counter() - start
        log.info("%s: %.2f s", name, self.timings[name])

    def note(self, text: str) -> None:
        """How the current step is getting on (e.g. training's iteration): the spinner's text
        on a terminal, else a log line at most every `note_every` seconds."""
        if self._current is None:
            return
        if self._status is not None:
            self._status.update(f"{self._current}: {text}")
            return
        now = time.perf_counter()
        if now - self._last_note >= self.note_every:
            self._last_note = now
            log.info("%s: %s", self._current, text)
