"""Shared helpers for the benchmarks: options, temporary MLflow stores, timing, Markdown tables.

Benchmarks print their tables on stdout; progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT / "benchmarks"
DATA = PROJECT / "data"
PYTHON = sys.executable
#: Variables that could point a child process at another run, experiment or store.
_MLFLOW_LEAKS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@dataclass(frozen=True)
class Options:
    """Command-line options shared by every benchmark."""

    repeats: int = 3
    quick: bool = False  # `--quick`: benchmarks may also shrink their workload (and say so)


@dataclass(frozen=True)
class Check:
    """One line of the summary: a target and whether this run met it (None: no target)."""

    benchmark: str
    what: str
    target: str
    measured: str
    passed: bool | None
    error: bool = False


@dataclass
class Report:
    """What one benchmark module produced: Markdown sections and its checks."""

    title: str
    sections: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def markdown(self) -> str:
        return "\n\n".join([f"## {self.title}", *self.sections])


def parse_options(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    """`--repeats N` (default 3) and `--quick` (one repeat); extra flags are the caller's."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=3, help="repeats per contender")
    parser.add_argument("--quick", action="store_true", help="one repeat (noisier)")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run only these benchmarks (train, startup, logging, load, replay, dvc, sweep); "
        "run_all.py only",
    )
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="set OMP_WAIT_POLICY=PASSIVE for every contender (less noise on a busy machine)",
    )
    args = parser.parse_args(argv)
    if args.omp_passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.pop("GOMP_SPINCOUNT", None)  # it would override the policy's spinning
    elif "OMP_WAIT_POLICY" not in os.environ:
        from replayml import OPENMP_SPINCOUNT

        # every contender, the hand-written baselines too, waits as replayml's processes do
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)
    if args.quick:
        args.repeats = 1
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def require_data() -> None:
    """Exit 2 with a hint when the default dataset is not there."""
    needed = [DATA / "events", DATA / "items.parquet", DATA / "users.parquet"]
    missing = [p for p in needed if not p.exists()]
    if missing or not any((DATA / "events").glob("date=*/*.parquet")):
        print(
            f"benchmarks: the default dataset is missing under {DATA} "
            f"({', '.join(str(p.relative_to(PROJECT)) for p in missing) or 'no partitions'}); "
            f"run `make data` first",
            file=sys.stderr,
        )
        raise SystemExit(2)


def set_process_env() -> None:
    """Telemetry off and no leaked run/experiment ids in this process (and its children)."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("DVC_SITE_CACHE_DIR", str(PROJECT / ".dvc" / "tmp" / "site-cache"))
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    for key in _MLFLOW_LEAKS:
        os.environ.pop(key, None)


def child_env(tracking_uri: str) -> dict[str, str]:
    """The environment of a measured command: like `make`'s, pointed at a temporary store."""
    set_process_env()
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def machine() -> str:
    """CPU count, 1-minute load average and how OpenMP threads wait (the same for every
    contender), for reading the numbers."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    spin = os.environ.get("GOMP_SPINCOUNT")
    if policy:
        openmp = f"OMP_WAIT_POLICY={policy}"
    else:
        openmp = f"GOMP_SPINCOUNT={spin}" if spin else "OpenMP's default spinning"
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, {openmp}"


def progress(message: str) -> None:
    """A progress line on stderr (stdout is for the tables)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder removed afterwards, whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"replayml-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sqlite_uri(db: Path) -> str:
    """`sqlite:////abs/path/mlflow.db`."""
    return f"sqlite:///{db.resolve()}"


class StoreFactory:
    """Fresh, already-initialised SQLite stores, copied from one template.

    Creating MLflow's schema takes seconds; a real user's store already exists, so every
    measured command gets its own copy of a store whose tables were created once, untimed.
    The template is built in a child process whose working directory is the template folder,
    so even MLflow's default experiment points inside the temporary tree.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template" / "mlflow.db"
        self._count = 0

    def _build_template(self) -> None:
        self.template.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "from mlflow.tracking import MlflowClient; "
            f"MlflowClient({sqlite_uri(self.template)!r}).search_experiments()"
        )
        run_checked(
            [PYTHON, "-c", code],
            cwd=self.template.parent,
            env=child_env(sqlite_uri(self.template)),
            what="initialising the template MLflow store",
        )

    def new(self, name: str) -> Path:
        """A new folder holding `mlflow.db` (a copy of the template); returns the folder."""
        if not self.template.exists():
            self._build_template()
        self._count += 1
        folder = self.root / f"{self._count:03d}-{name}"
        folder.mkdir(parents=True)
        shutil.copy2(self.template, folder / "mlflow.db")
        return folder


def run_checked(
    cmd: Sequence[str], *, cwd: Path, env: dict[str, str], what: str, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with the tail of its stderr when it fails."""
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def timed(
    cmd: Sequence[str], *, cwd: Path, env: dict[str, str], what: str, timeout: float = 1800
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of a whole command (seconds) and its captured output."""
    start = time.perf_counter()
    proc = run_checked(cmd, cwd=cwd, env=env, what=what, timeout=timeout)
    return time.perf_counter() - start, proc


def rotated(names: Sequence[str], repeat: int) -> list[str]:
    """The contenders in a different order each repeat, so none always runs first."""
    k = repeat % len(names)
    return [*names[k:], *names[:k]]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def secs(value: float) -> str:
    """Seconds for a table cell."""
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def ratio(value: float) -> str:
    """A ratio for a table cell, with enough digits to stay non-zero."""
    return f"{value:.3f}×" if value < 0.1 else f"{value:.2f}×"


def verdict(check: Check) -> str:
    """PASS / MISS against the target, ERROR when the benchmark crashed, info without target."""
    if check.error:
        return "ERROR"
    return {True: "PASS", False: "MISS", None: "info"}[check.passed]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded for reading in a terminal."""
    cells = [list(headers), *[list(map(str, r)) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def samples_cell(values: Sequence[float]) -> str:
    """All samples of a contender, for seeing the spread behind a median."""
    return ", ".join(f"{v:.3g}" for v in values)
