"""Fixtures and helpers for the registry, review and team-server tests: a real `mlflow server`
on 127.0.0.1 (plain and with MLflow's basic-auth app), a store with real trained runs of every
kind the registry must tell apart, `mlflow models serve`, and headless Chromium.

Import the fixtures you use into the test module (`from server_fixtures import ...`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import git, train

VENV_BIN = Path(sys.executable).parent
ADMIN = "admin"
AUTH_EXTRAS = ("flask-wtf<2", "wtforms<4")  # what `mlflow[auth]==3.17.2` adds to the venv
# another dataset's name, longer than MLflow's 6000-character param limit: the run keeps it in
# its config artifact only, and the review must read it from there
OTHER_DATASET = "marketplace_eu" + "_long" * 1220
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # uvicorn, mlflow
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    env.update(extra or {})
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started in its own session, and its children, by its group id."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> float:
    """Poll `url` until it answers 200; fail with the log's tail if the process dies or the
    time runs out. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            pytest.fail(f"{url}: the process exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{tail}")


# ------------------------------------------------------------------------ mlflow server


@dataclass
class MlflowServer:
    """A running `mlflow server` on 127.0.0.1 with a SQLite store in a temporary folder."""

    url: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path
    admin_password: str = ""
    started_in: float = 0.0
    users: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def creds(self, user: str) -> dict[str, str]:
        """The environment variables that authenticate as `user`."""
        password = self.admin_password if user == ADMIN else self.users[user]
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}

    def rest(self, method: str, path: str, body: dict | None = None, user: str = ADMIN) -> dict:
        """Call the server's REST API as `user` (basic auth)."""
        import base64

        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        if self.admin_password:
            c = self.creds(user)
            token = f"{c['MLFLOW_TRACKING_USERNAME']}:{c['MLFLOW_TRACKING_PASSWORD']}"
            request.add_header(
                "Authorization", "Basic " + base64.b64encode(token.encode()).decode()
            )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def create_user(self, user: str, password: str) -> None:
        """A new user (with the server's default permission, READ) created by the admin."""
        self.rest("POST", "/api/2.0/mlflow/users/create", {"username": user, "password": password})
        self.users[user] = password


def auth_extras_path(base: Path) -> Path | None:
    """MLflow's basic-auth app needs `mlflow[auth]` (Flask-WTF), locked in the project."""
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail(
            "MLflow's basic-auth app needs Flask-WTF: the environment lacks `mlflow[auth]`; "
            "run `make install` (uv sync --frozen)"
        )
    return None


def start_server(root: Path, *, auth: bool = False, extras: Path | None = None) -> MlflowServer:
    """Start `mlflow server` (without waiting for it); `auth` adds the basic-auth app."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        str(VENV_BIN / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--workers", "1",
    ]  # fmt: skip
    extra: dict[str, str] = {}
    password = ""
    if auth:
        password = "admin-" + os.urandom(8).hex()
        ini = root / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # cache verified credentials (PBKDF2 per request makes every call ~4x slower)
            "auth_cache_ttl_seconds = 300\n"
        )
        cmd += ["--app-name", "basic-auth"]
        extra.update(
            MLFLOW_AUTH_CONFIG_PATH=str(ini),
            MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex(),
            MLFLOW_AUTH_ADMIN_PASSWORD=password,
        )
        if extras is not None:
            extra["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(extras), os.environ.get("PYTHONPATH", "")) if p
            )
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=_child_env(extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return MlflowServer(f"http://127.0.0.1:{port}", root, proc, log, admin_password=password)


def ready(server: MlflowServer, timeout: float = 120) -> MlflowServer:
    """Wait until the server answers `/health` (fails with its log otherwise)."""
    if not server.started_in:
        server.started_in = wait_http(server.url + "/health", server.proc, server.log, timeout)
    return server


@dataclass
class _Boot:
    plain: MlflowServer
    auth: MlflowServer | None
    auth_problem: str = ""


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Boot]:
    """Start both servers at once (each needs 6-15 s to boot) and stop them at the end."""
    plain = start_server(tmp_path_factory.mktemp("mlflow-server"))
    boot = _Boot(plain, None)
    try:
        try:
            extras = auth_extras_path(tmp_path_factory.getbasetemp())
            boot.auth = start_server(
                tmp_path_factory.mktemp("mlflow-auth-server"), auth=True, extras=extras
            )
        except pytest.fail.Exception as exc:  # reported by the auth_server fixture
            boot.auth_problem = str(exc)
        yield boot
    finally:
        _stop(plain.proc)
        if boot.auth is not None:
            _stop(boot.auth.proc)


@pytest.fixture(scope="session")
def mlflow_server(_servers: _Boot) -> MlflowServer:
    """A plain team tracking server (SQLite backend, proxied artifacts), for the session."""
    return ready(_servers.plain)


@pytest.fixture(scope="session")
def auth_server(_servers: _Boot) -> MlflowServer:
    """A tracking server with MLflow's basic-auth app; the admin password is random."""
    if _servers.auth is None:
        pytest.fail(_servers.auth_problem)
    return ready(_servers.auth)


# ----------------------------------------------------------------- a store of real runs


def _crash(*args: object, **kwargs: object) -> None:
    raise RuntimeError("crashed while training")


@dataclass(frozen=True)
class TrainedStore:
    """A project whose local store holds one real run of each kind the registry and the
    review must tell apart."""

    root: Path
    uri: str
    base: str  # the default lgbm run
    weaker: str  # a near-trivial model on other dates (worse on every key metric)
    ranker: str  # model=lgbm_ranker: another objective
    other_data: str  # data.name differs (and is too long for an MLflow param)
    not_replayable: str  # model.deterministic=false
    failed: str  # training crashed inside the run: FAILED
    dirty: str  # trained from a dirty tree, diff recorded
    dirty_no_diff: str  # trained from a dirty tree, its recorded diff since lost

    @property
    def artifacts(self) -> Path:
        return self.root / "mlruns" / "artifacts"


_SHARED: dict[str, TrainedStore] = {}


@pytest.fixture(scope="session")
def trained_store(
    template_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainedStore:
    """Eight real runs in one local SQLite store, made once per session and shared by every
    module that imports this fixture (tests use their own registered-model names)."""
    if "store" not in _SHARED:  # each importing module gets its own fixture definition
        _SHARED["store"] = _train_store(template_project, tmp_path_factory)
    return _SHARED["store"]


def _train_store(template_project: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedStore:
    root = tmp_path_factory.mktemp("trained-store") / "proj"
    shutil.copytree(template_project, root, symlinks=True)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        base = train(root, ["tracking.run_name=base"]).run_id
        weaker = train(
            root,
            [
                "tracking.run_name=weaker",
                "dates=last_7d",
                "model.num_leaves=2",
                "model.num_boost_round=1",
                "model.learning_rate=0.01",
            ],
        ).run_id
        ranker = train(root, ["model=lgbm_ranker"]).run_id
        other = train(root, [f"data.name={OTHER_DATASET}"]).run_id
        not_replayable = train(root, ["model.deterministic=false"]).run_id
        with pytest.MonkeyPatch.context() as patch:  # a crash inside training: FAILED
            patch.setattr("replayml.model.fit.fit", _crash)
            with pytest.raises(RuntimeError, match="crashed while training"):
                train(root, ["tracking.run_name=failed"])
        (root / "NOTES.md").write_text("work in progress\n")  # untracked: the tree is dirty
        dirty = train(root, ["tracking.run_name=dirty"]).run_id
        dirty_no_diff = train(root, ["tracking.run_name=dirty-no-diff"]).run_id
        (root / "NOTES.md").unlink()
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    failed = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="attributes.status = 'FAILED'",
    )
    assert len(failed) == 1, "the crashed run should be the only FAILED run"
    # the diff artifact is lost (e.g. an artifact store cleaned up by hand)
    lost = Path(client.get_run(dirty_no_diff).info.artifact_uri.removeprefix("file://"))
    (lost / "replayml" / "code.diff").unlink()
    assert git(root, "status", "--porcelain") == ""
    return TrainedStore(
        root=root,
        uri=uri,
        base=base,
        weaker=weaker,
        ranker=ranker,
        other_data=other,
        not_replayable=not_replayable,
        failed=failed[0].info.run_id,
        dirty=dirty,
        dirty_no_diff=dirty_no_diff,
    )


def spec_for(uri: str, root: Path | None = None):  # noqa: ANN201
    """The StoreSpec of a tracking URI."""
    from replayml.config.schema import TrackingConfig
    from replayml.tracking.store import store_spec

    return store_spec(TrackingConfig(uri=uri), root or Path.cwd())


# ---------------------------------------------------------------------- model serving


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, work: Path) -> Iterator[str]:
    """`mlflow models serve -m MODEL_URI --env-manager local` on a free port; yields its URL."""
    port = free_port()
    log = work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
            ],  # fmt: skip
            cwd=work,
            env=_child_env({"MLFLOW_TRACKING_URI": tracking_uri}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/ping", proc, log, timeout=120)
        yield url
    finally:
        _stop(proc)


def post_json(url: str, payload: dict) -> dict:
    """POST JSON, return the JSON answer."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


# ---------------------------------------------------------------------------- Chromium


def chromium() -> str:
    """Debian's headless Chromium; installed with apt-get when missing (about a minute).

    Fails (never skips) when it cannot be had.
    """
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"])
    for cmd in steps:
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=600, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"cannot install Chromium for the UI test: `{' '.join(cmd)}`: {exc}")
        if proc.returncode != 0:
            pytest.fail(
                f"cannot install Chromium for the UI test: `{' '.join(cmd)}` exited "
                f"{proc.returncode}: {proc.stderr.strip()[-500:]}. Install it with "
                f"`apt-get install -y chromium` (Debian) and rerun"
            )
    found = shutil.which("chromium")
    if not found:
        pytest.fail("apt-get installed chromium but no `chromium` is on PATH")
    return found


def render_page(url: str, work: Path, budget_ms: int = 15000) -> tuple[str, Path]:
    """The DOM of `url` after the page's scripts ran (headless Chromium), and a screenshot."""
    binary = chromium()
    work.mkdir(parents=True, exist_ok=True)
    common = [
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={work / 'profile'}",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1400,1800",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
    )
    assert dom.returncode == 0, f"chromium --dump-dom failed: {dom.stderr[-800:]}"
    png = work / "run-page.png"
    shot = subprocess.run(
        [*common, f"--screenshot={png}", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.returncode == 0 and png.is_file(), f"chromium --screenshot failed: {shot.stderr}"
    return dom.stdout, png


# ----------------------------------------------------------------- concurrent alias moves


def race_worker(
    uri: str, name: str, alias: str, slot: int, rounds: int, barrier: Any, out: Any
) -> None:
    """Child process of the alias race. Each round: meet the other racer and the test at the
    barrier, read the round's plan the test published (registered-model tag `test.plan`:
    the expected holder and one target per racer), try the compare-and-set move, and report
    ("ok"|"conflict"|"error", target, token or message) on `out`."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from replayml.registry import AliasConflictError, move_alias
    from replayml.tracking.registry_store import RegistryStore

    store = RegistryStore(spec_for(uri))
    for _ in range(rounds):
        barrier.wait(timeout=120)
        plan = json.loads(store.model_tags(name)["test.plan"])
        target = plan["targets"][slot]
        try:
            move = move_alias(store, name, alias, target, expect=plan["expected"], action="race")
            out.put(("ok", target, move.token))
        except AliasConflictError as exc:
            out.put(("conflict", target, str(exc)))
        except Exception as exc:  # reported to the test, which fails on it
            out.put(("error", target, f"{type(exc).__name__}: {exc}"))
        barrier.wait(timeout=120)  # the test checks the store before the next round
