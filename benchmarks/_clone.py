"""A throwaway clone of the project for benchmarks that commit, run DVC or replay runs.

`git clone` of the project gives its committed tree (src/ included); `data/` is copied in and
the clone gets a private copy of the project's DVC cache, so `dvc status` sees the data version
of `data.dvc` while nothing the clone does (`dvc repro` caching outputs and run-cache entries,
`git worktree add`, commits) can touch the project. Commands run with the venv's `bin/` first on
PATH (DVC stages call `python`), `PYTHONPATH=<clone>/src` (the clone's own code, as in a user's
checkout, not the project's editable install) and a private `DVC_SITE_CACHE_DIR`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import DATA, PROJECT, PYTHON, child_env, progress, run_checked

VENV_BIN = Path(PYTHON).parent
#: `... [replayml.progress][INFO] - building features: 7.78 s` (train.py's Hydra log) and
#: `INFO replayml.progress: reading the run: 5.38 s` (a `replayml` command with -v).
STEP_LINE = re.compile(
    r"(?:\[replayml\.progress\]\[INFO\] - |INFO replayml\.progress: )"
    r"(?P<step>[^\n]+?): (?P<secs>\d+(?:\.\d+)?) s$",
    re.M,
)
RUN_LINE = re.compile(r"^run: \S+/runs/(?P<id>[0-9a-f]{32})\s*$", re.M)


def steps_of(log: str) -> dict[str, float]:
    """The `replayml.progress` step timings in a command's log (a repeated step is summed)."""
    found: dict[str, float] = {}
    for m in STEP_LINE.finditer(log):
        found[m["step"]] = found.get(m["step"], 0.0) + float(m["secs"])
    return found


def run_id_of(stdout: str) -> str:
    """The run id from train.py's `run: <url>/runs/<id>` line."""
    m = RUN_LINE.search(stdout)
    if not m:
        raise RuntimeError(f"no `run: .../runs/<id>` line in train.py's output:\n{stdout[-2000:]}")
    return m["id"]


@dataclass(frozen=True)
class Clone:
    """A clone at `root`, with its private DVC cache and DVC site cache under `tmp`."""

    root: Path
    tmp: Path

    @property
    def dvc_cache(self) -> Path:
        return self.tmp / "dvc-cache"

    @property
    def dvc_site(self) -> Path:
        return self.tmp / "dvc-site-cache"

    def env(self, tracking_uri: str | None = None, pycache: Path | None = None) -> dict[str, str]:
        """`child_env` plus the venv on PATH, the clone's src/ and the private DVC site cache;
        with `pycache`, Python reads compiled bytecode from there (see `compile_bytecode`)."""
        env = child_env(tracking_uri or "")
        if not tracking_uri:
            env.pop("MLFLOW_TRACKING_URI")
        if pycache is not None:
            env["PYTHONPYCACHEPREFIX"] = str(pycache)
        env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
        env["PYTHONPATH"] = str(self.root / "src")
        env["DVC_SITE_CACHE_DIR"] = str(self.dvc_site)
        env["DVC_NO_ANALYTICS"] = "1"
        env.pop("VIRTUAL_ENV", None)
        return env

    def git(self, *args: str) -> str:
        cmd = ["git", "-c", "core.hooksPath=/dev/null", *args]
        return run_checked(cmd, cwd=self.root, env=self.env(), what="git").stdout.strip()

    def dvc(self, *args: str, what: str = "dvc") -> str:
        cmd = [str(VENV_BIN / "dvc"), *args]
        proc = run_checked(cmd, cwd=self.root, env=self.env(), what=what)
        return proc.stdout + proc.stderr

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def dirty(self) -> list[str]:
        return [line for line in self.git("status", "--porcelain").splitlines() if line]

    def commit_all(self, message: str) -> str:
        """Commit every tracked change (as a bench user, no hooks, no signing); the new HEAD."""
        self.git(
            "-c",
            "user.name=replayml-bench",
            "-c",
            "user.email=bench@localhost",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-a",
            "-m",
            message,
        )
        return self.head()


def make_clone(tmp: Path, *, needs_clean: Sequence[str] = ("data.dvc",)) -> Clone:
    """Clone the project into `tmp/proj`, copy data/ and the DVC cache, check `dvc status`."""
    clone = Clone(tmp / "proj", tmp)
    progress(f"cloning {PROJECT} into {clone.root}")
    run_checked(
        ["git", "clone", "-q", "--no-hardlinks", str(PROJECT), str(clone.root)],
        cwd=tmp,
        env=clone.env(),
        what="git clone of the project",
    )
    shutil.copytree(DATA, clone.root / "data", symlinks=True)
    shutil.copytree(PROJECT / ".dvc" / "cache", clone.dvc_cache, symlinks=True)
    clone.dvc("cache", "dir", "--local", str(clone.dvc_cache), what="dvc cache dir --local")
    for target in needs_clean:
        status = clone.dvc("status", target, what=f"dvc status {target}")
        if "up to date" not in status:
            raise RuntimeError(
                f"the clone's {target} is not in sync with its DVC cache (copied from "
                f"{PROJECT / '.dvc' / 'cache'}); `make data` first? dvc status said:\n{status}"
            )
    if clone.dirty():
        raise RuntimeError(f"the fresh clone is not clean: {clone.dirty()}")
    return clone


def compile_bytecode(prefix: Path) -> float:
    """Compile the standard library and the venv's site-packages into `prefix`; seconds taken.

    Reference rows run with `PYTHONPYCACHEPREFIX=<prefix>`: every module, the standard library
    included, is read from bytecode compiled once, without writing into the venv (a venv made
    by `make install` is compiled already; one made by a plain `uv sync` is not).
    """
    paths = sysconfig.get_paths()
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [
        PYTHON,
        "-m",
        "compileall",
        "-q",
        "-j",
        "0",
        "-x",
        r"[/\\](test|tests|idle_test|lib2to3)[/\\]",  # test data holds deliberate syntax errors
        paths["stdlib"],
        paths["purelib"],
    ]
    progress(f"compiling bytecode into {prefix} (reference rows)")
    start = time.perf_counter()
    # a few files never compile (Python 2 leftovers in packages); they are not imported
    subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=1800)
    return time.perf_counter() - start
