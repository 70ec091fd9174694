"""Fixtures: a real project in a temporary folder (git repo, DVC cache and local remote, a
small generated dataset, an MLflow SQLite store), composed with Hydra's compose API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL_SCALE = 0.03  # ~40k events over 60 days: seconds per training run


def git(root: Path, *args: str) -> str:
    """Run git in `root` and return stdout."""
    proc = subprocess.run(
        ["git", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        },
    )
    return proc.stdout


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the venv's DVC in `root`."""
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=check,
    )


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    site = tmp_path_factory.mktemp("dvc-site-cache")
    saved = dict(os.environ)
    os.environ.update(
        DVC_SITE_CACHE_DIR=str(site),
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    for var in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_RUN_ID",
        "MLFLOW_EXPERIMENT_NAME",
        "REPLAYML_UI_URL",
    ):
        os.environ.pop(var, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


PROJECT_FILES = ("conf", "train.py", "pyproject.toml", "uv.lock", ".gitignore", ".dvcignore")


@pytest.fixture(scope="session")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with committed small data (data.dvc) pushed to a local DVC remote."""
    from replayml.data.prepare import GeneratorSpec, prepare

    base = tmp_path_factory.mktemp("template")
    root = base / "proj"
    root.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name)
        else:
            shutil.copy2(src, root / name)
    # the tests generate the built-in marketplace data: a project whose own dataset is the
    # default (`- data: shop` in conf/config.yaml) still tests against it
    config = root / "conf" / "config.yaml"
    config.write_text(
        re.sub(r"(?m)^(\s*- data:)\s*[^\s#]+", r"\1 marketplace", config.read_text())
    )
    git(root, "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "-d", "local", str(base / "remote"))
    prepare(root, GeneratorSpec(scale=SMALL_SCALE), push=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project with small data")
    return root


@pytest.fixture
def project(template_project: Path, tmp_path: Path) -> Path:
    """A private copy of the template project (git history, DVC cache and data included)."""
    root = tmp_path / "proj"
    shutil.copytree(template_project, root, symlinks=True)
    return root


def compose_cfg(root: Path, overrides: list[str] | None = None):  # noqa: ANN201
    """Compose the project's config with Hydra's compose API, typed."""
    from replayml.config.compose import compose
    from replayml.config.resolve import to_run_config

    return to_run_config(compose(root / "conf", list(overrides or [])))


@pytest.fixture(scope="module")
def tables(template_project: Path):  # noqa: ANN201
    """The template's config and its preprocessed events, items and users (for builders)."""
    from datetime import date

    import pandas as pd

    from replayml.data.load import load
    from replayml.data.preprocess import preprocess

    cfg = compose_cfg(template_project)
    t = load(cfg.data, template_project, date(2024, 3, 20), date(2024, 4, 29))
    events, _ = preprocess(
        t.events, cfg.preprocessing, pd.Timestamp("2024-04-14"), pd.Timestamp("2024-04-27")
    )
    return cfg, events, t.items, t.users


def train(root: Path, overrides: list[str] | None = None, **ctx_kwargs):  # noqa: ANN003, ANN201
    """Run the real pipeline in-process against the project's own MLflow store."""
    from replayml.pipeline import RunContext, run_experiment

    overrides = list(overrides or [])
    cfg = compose_cfg(root, overrides)
    ctx = RunContext(
        project_root=root,
        output_dir=root
        / "outputs"
        / f"run-{len(list((root / 'outputs').glob('*'))) if (root / 'outputs').exists() else 0}",
        overrides=tuple(overrides),
        **ctx_kwargs,
    )
    return run_experiment(cfg, ctx)


def run_train_py(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python train.py ARGS` as a user would, in the project folder."""
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def mlflow_client(root: Path):  # noqa: ANN201
    """A client on the project's local store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def all_runs(root: Path) -> list:
    """Every run in the project's local store (none when the store does not exist)."""
    if not (root / "mlruns" / "mlflow.db").exists():
        return []
    client = mlflow_client(root)
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps]) if exps else []


@pytest.fixture
def run_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Run from an empty folder as a user named alice, with no tracking URI in the
    environment; afterwards nothing may have created ./mlflow.db or ./mlruns there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("USER", "alice")
    yield
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
