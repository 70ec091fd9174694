"""The software environment of a run: lock-file hash, interpreter, platform, library versions."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "lightgbm", "numpy", "pandas", "pyarrow", "scikit-learn", "mlflow", "dvc", "hydra-core",
    "omegaconf",
)  # fmt: skip
LOCK_FILE = "uv.lock"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Environment:
    """What the run ran on; compared field by field on replay."""

    lock_hash: str
    python: str
    platform: str
    machine: str
    cpu_count: int
    cpu: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    thread_env: dict[str, str] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes ("" when it does not exist)."""
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def cpu_description() -> str:
    """The CPU model and the vector instruction levels NumPy uses on it, e.g. `AMD EPYC;
    numpy SIMD X86_V2 X86_V3`: two machines of one architecture can still sum floats in
    another order (AVX-512 or not), which moves the last digits of metrics and split gains."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model
            )
    except OSError:
        pass
    try:
        from numpy._core._multiarray_umath import (  # type: ignore[attr-defined]
            __cpu_baseline__,
            __cpu_dispatch__,
            __cpu_features__,
        )
    except ImportError:
        return model or "unknown"
    simd = [f for f in (*__cpu_baseline__, *__cpu_dispatch__) if __cpu_features__.get(f)]
    return f"{model or 'unknown'}; numpy SIMD {' '.join(simd) or 'none'}"


def current_environment(root: Path) -> Environment:
    """Describe the running interpreter and the project's lock file."""
    return Environment(
        lock_hash=file_sha256(root / LOCK_FILE),
        python=platform.python_version(),
        platform=f"{platform.system()}-{platform.release()}",
        machine=platform.machine(),
        cpu_count=os.cpu_count() or 1,
        cpu=cpu_description(),
        packages={name: _version(name) for name in TRACKED_PACKAGES},
        thread_env={k: os.environ[k] for k in THREAD_VARS if k in os.environ},
    )


def command_line(transform: Callable[[str], str] = str) -> str:
    """The command that started this process, quoted so that it can be pasted into a shell;
    `transform` is applied to each argument whole (e.g. to redact a secret value)."""
    import shlex

    return shlex.join(transform(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def login_name() -> str:
    """Who runs this process: the login name, or "unknown" where the uid has none (a container
    started with `-u 1001` has no passwd entry, and getpass raises)."""
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
