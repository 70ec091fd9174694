"""A Python process started ahead of time: it imports the heavy third-party libraries while
the caller is still preparing, then runs a script exactly as `python SCRIPT ARGS` would.

Only libraries of the environment are imported early, never the code the script will run:
that code is put on `sys.path` when the job arrives, in the order a plain `python SCRIPT` with
`PYTHONPATH` would have, and the process refuses the job if any of it was already imported.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

#: imported before the job arrives (whatever is missing from the environment is skipped)
WARM_IMPORTS = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "yaml",
    "omegaconf",
    "hydra",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "lightgbm",
    "sklearn.metrics",
    "matplotlib.figure",
)

_BOOT = r"""
import importlib, json, os, runpy, signal, sys, threading, time
def _watch(parent):
    # the caller owns this process: when it dies (even by SIGKILL), stop as a SIGTERM would,
    # so a training run marks itself KILLED instead of training on unseen; its pipes are gone,
    # so what is still written goes nowhere rather than failing the run's cleanup
    while os.getppid() == parent:
        time.sleep(0.25)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.kill(os.getpid(), signal.SIGTERM)
if os.environ.get("REPLAYML_PRESTART_PARENT", "").isdigit():
    parent = int(os.environ.pop("REPLAYML_PRESTART_PARENT"))
    threading.Thread(target=_watch, args=(parent,), daemon=True).start()
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass
job = json.loads(sys.stdin.readline() or "null")
if job is None:
    raise SystemExit(0)
early = sorted(m for m in sys.modules if m.split(".")[0] in job["own_packages"])
if early:
    print(f"prestarted python: {early[0]} was imported before the job", file=sys.stderr)
    raise SystemExit(97)
os.chdir(job["cwd"])
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in job["path"] + [os.environ.get("PYTHONPATH", "")] if p
)
# `python SCRIPT` puts the script's folder first (unless PYTHONSAFEPATH), then PYTHONPATH
first = [] if sys.flags.safe_path else [job["cwd"]]
sys.path[0 : 0 if sys.flags.safe_path else 1] = [*first, *job["path"]]
sys.path_importer_cache.clear()
importlib.invalidate_caches()
sys.argv = job["argv"]
runpy.run_path(job["argv"][0], run_name="__main__")
"""


class PrestartedPython:
    """`python -c BOOT` that warms up now and runs one script later (`run`)."""

    def __init__(self, python: str, env: dict[str, str], idle_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [python, "-c", _BOOT, json.dumps(WARM_IMPORTS)],
            cwd=idle_dir,  # an empty folder: nothing there can shadow a library
            env={**env, "REPLAYML_PRESTART_PARENT": str(os.getpid())},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(
        self,
        script: str,
        args: list[str],
        cwd: Path,
        path: list[Path],
        own_packages: tuple[str, ...] = ("replayml", "hydra_plugins"),
    ) -> subprocess.CompletedProcess[str]:
        """Run `cwd/script` with `args`, `path` first on sys.path (like PYTHONPATH)."""
        job: dict[str, Any] = {
            "cwd": str(cwd),
            "argv": [script, *args],
            "path": [str(p) for p in path],
            "own_packages": list(own_packages),
        }
        out, err = self.proc.communicate(json.dumps(job) + "\n")
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def close(self, grace: float = 10.0) -> None:
        """Stop the process if it is still running (idempotent): SIGTERM first, so a job under
        way marks its run KILLED, then SIGKILL after `grace` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()

    def __enter__(self) -> PrestartedPython:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
