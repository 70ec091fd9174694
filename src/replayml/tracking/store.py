"""Open an MLflow tracking store: URI resolution, fail-fast connection, one-time initialisation."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replayml.config.schema import TrackingConfig
from replayml.errors import TrackingError
from replayml.redact import strip_userinfo

log = logging.getLogger(__name__)
#: warnings already given by this process
_SAID: set[str] = set()

DEFAULT_UI = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class StoreSpec:
    """Where a run is tracked and how its link is printed."""

    uri: str
    experiment: str
    ui_url: str
    artifact_location: str | None
    request_timeout: int
    max_retries: int
    #: ui_url was given (tracking.ui_url or $REPLAYML_UI_URL), not derived from the URI
    ui_given: bool = False

    @property
    def is_local(self) -> bool:
        return self.uri.startswith("sqlite:")

    @property
    def display_uri(self) -> str:
        return strip_userinfo(self.uri)

    @property
    def local_dir(self) -> Path | None:
        """The folder of a local store (its database and artifacts); None for a server."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return Path(self.uri.removeprefix("sqlite:///")).parent


#: where DVC runs `dvc exp run --temp` and queued experiments: a throwaway copy of the project
DVC_TEMP_WORKSPACES = (".dvc", "tmp", "exps")


def workspace_origin(root: Path) -> Path:
    """The project `root` is a copy of: itself, unless it is one of DVC's temporary experiment
    workspaces (`<project>/.dvc/tmp/exps/...`), whose local store would be thrown away."""
    parts = root.resolve().parts
    n = len(DVC_TEMP_WORKSPACES)
    for i in range(len(parts) - n, 0, -1):
        if parts[i : i + n] == DVC_TEMP_WORKSPACES:
            return Path(*parts[:i])
    return root


def store_spec(cfg: TrackingConfig, root: Path) -> StoreSpec:
    """Resolve `tracking.*` with $MLFLOW_TRACKING_URI and the project's default local store."""
    uri = cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    artifact_location = None
    if not uri and "MLFLOW_TRACKING_URI" in os.environ and not _SAID:  # an unset CI secret?
        _SAID.add("empty uri")
        log.warning(
            "MLFLOW_TRACKING_URI is set but empty: using the project's local store in %s "
            "(unset the variable to say so, or give the server's address)",
            workspace_origin(root) / cfg.store_dir,
        )
    if not uri:
        store = (workspace_origin(root) / cfg.store_dir).resolve()
        uri = f"sqlite:///{store / 'mlflow.db'}"
        artifact_location = (store / "artifacts").as_uri()
    elif uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///")).resolve().parent
        artifact_location = (store / "artifacts").as_uri()
    elif not uri.startswith(("http://", "https://", "sqlite:", "postgresql", "mysql")):
        raise TrackingError(
            f"tracking.uri={uri!r} is not a tracking store URI; use http(s)://host:port for a "
            f"server or sqlite:////abs/path/mlflow.db (file stores are not supported by MLflow 3)"
        )
    ui = cfg.ui_url or os.environ.get("REPLAYML_UI_URL")
    given = bool(ui)
    if not ui:
        ui = strip_userinfo(uri) if uri.startswith("http") else DEFAULT_UI
    return StoreSpec(
        ui_given=given,
        uri=uri,
        experiment=cfg.experiment,
        ui_url=ui.rstrip("/"),
        artifact_location=artifact_location,
        request_timeout=cfg.request_timeout,
        max_retries=cfg.max_retries,
    )


def bound_http(spec: StoreSpec) -> None:
    """Bound MLflow's HTTP retries (minutes by default) and turn its telemetry off."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(spec.request_timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(spec.max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # we pass exact pip requirements with the model; no uv export or requirement inference
    os.environ.setdefault("MLFLOW_UV_AUTO_DETECT", "false")
    # the command prints its own run link (tracking.ui_url); MLflow's second one, printed when
    # a run on a server ends, would point at the server's own address
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # our commands read small artifacts: a download progress bar would only clutter the output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def explain(exc: BaseException, spec: StoreSpec) -> TrackingError:
    """A clear message for a failed tracking request (unreachable, unauthorised, forbidden)."""
    from replayml.redact import redact_text

    text = redact_text(str(exc))  # request errors quote the URL, credentials included
    where = spec.display_uri
    status = re.search(r"(?:error code|status code|HTTP) ?:? ?(\d{3})\b", text)
    code = status.group(1) if status else ""
    if code == "401" or "Unauthorized" in text or "credentials" in text.lower():
        return TrackingError(
            f"the tracking server at {where} refused the request: not authenticated (401); set "
            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment"
        )
    if code == "403" or "Permission denied" in text or "PERMISSION_DENIED" in text:
        return TrackingError(
            f"the tracking server at {where} refused the request: permission denied (403); the "
            f"user in MLFLOW_TRACKING_USERNAME needs EDIT or MANAGE rights on the experiment"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    cause = next((why for marker, why in _CAUSES if marker in text), first[:300])
    if cause == _CAUSES[-1][1]:
        cause = f"no answer within {spec.request_timeout} s (tracking.request_timeout)"
    if spec.is_local:  # a file, not a server: the advice is about the file
        db = spec.uri.removeprefix("sqlite:///")
        damaged = ("malformed", "not a database", "already exists", "no such table")
        if not any(marker in text for marker in damaged):  # e.g. locked, disk full
            return TrackingError(f"cannot use the local tracking store {db}: {cause}")
        return TrackingError(
            f"cannot use the local tracking store {db}: {cause}. The file is damaged, from "
            f"another MLflow version, or not an MLflow store: restore it from a backup, or move "
            f"it aside (its runs leave this store) and the next run creates a new one"
        )
    if os.environ.get("MLFLOW_TRACKING_URI") == spec.uri:
        other = "or point MLFLOW_TRACKING_URI at a running server (unset it for the local store)"
    else:  # tracking=server reads MLFLOW_TRACKING_URI, else its default address
        other = (
            "or point MLFLOW_TRACKING_URI (or tracking.uri) at a running server "
            "(tracking=local for the local store)"
        )
    # `make ui` serves the project's local store at the UI's default address; a team server
    # elsewhere is started by whoever runs it
    local_ui = spec.uri.rstrip("/") in ("http://127.0.0.1:5000", "http://localhost:5000")
    hint = " (`make ui` starts one on the local store)" if local_ui else ""
    return TrackingError(
        f"cannot use the tracking store at {where}: {cause}. Check that the server is "
        f"running{hint} {other}"
    )


#: what a failed request's text says -> what it means (the last entry: a timeout)
_CAUSES = (
    ("Connection refused", "connection refused: no server listens at that address"),
    ("Name or service not known", "unknown host name"),
    ("Temporary failure in name resolution", "the host name cannot be resolved"),
    ("No route to host", "no route to that host"),
    ("500 error responses", "the server failed the request (HTTP 500: its log says why)"),
    ("timed out", "timed out"),
)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def _create_store(db: Path) -> None:
    """Create a new SQLite store's tables in a side file, then move it into place: a process
    killed during MLflow's migrations (seconds on a first run) leaves no half-built store."""
    from mlflow.tracking import MlflowClient

    for stale in db.parent.glob(f".{db.name}.init-*"):  # left by a killed first run
        stale.unlink(missing_ok=True)
    side = db.with_name(f".{db.name}.init-{os.getpid()}")
    MlflowClient(tracking_uri=f"sqlite:///{side}").search_experiments(max_results=1)
    os.replace(side, db)


def open_experiment(spec: StoreSpec) -> tuple[object, str]:
    """Connect (fail fast), initialise a local store once, and get-or-create the experiment.

    Returns `(MlflowClient, experiment_id)`. A local SQLite store is initialised under a file
    lock so that parallel jobs never race on its schema migration.
    """
    bound_http(spec)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def _open() -> tuple[object, str]:
        client = MlflowClient(tracking_uri=spec.uri)
        exp = client.get_experiment_by_name(spec.experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(
                    spec.experiment,
                    artifact_location=spec.artifact_location,
                    # the UI then opens the experiment as model training, not as a GenAI app
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            except MlflowException:
                exp = client.get_experiment_by_name(spec.experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"experiment tracking.experiment={spec.experiment!r} is deleted in "
                    f"{spec.display_uri}; restore it in the UI or choose another name"
                )
            exp_id = exp.experiment_id
        return client, exp_id

    try:
        if spec.is_local:
            from filelock import FileLock

            db = Path(spec.uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(db) + ".lock", timeout=120):
                if not db.exists():
                    _create_store(db)
                return _open()
        return _open()
    except TrackingError:
        raise
    except Exception as exc:  # mlflow and requests raise many types for the same condition
        raise explain(exc, spec) from exc


def run_url(
    spec: StoreSpec, experiment_id: str, run_id: str, recorded_ui: str | None = None
) -> str:
    """The run's page in the MLflow UI: on the UI address given now, else on the one the run
    was made with (`tracking.ui_url`, e.g. a team's public address), else on the store's."""
    ui = spec.ui_url
    if not spec.ui_given and recorded_ui and recorded_ui not in ("None", "null"):
        ui = recorded_ui.rstrip("/")
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"


def client_for_existing_store(spec: StoreSpec) -> Any:
    """An MlflowClient on a store that must already exist (reading runs, the registry).

    MlflowClient would silently create an empty SQLite store at a wrong path; refuse instead.
    """
    if spec.is_local:
        db = Path(spec.uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise TrackingError(
                f"there is no tracking store at {spec.display_uri}; pass the store that holds "
                f"the runs with --tracking-uri (or set MLFLOW_TRACKING_URI)"
            )
    bound_http(spec)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=spec.uri, registry_uri=spec.uri)


@contextmanager
def process_tracking_uri(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI (and experiment) at `uri` for one call.

    Some MLflow functions (`log_model`, resolving `models:/m-...`) only read the global URI,
    and setting it also exports MLFLOW_TRACKING_URI to child processes: scope it.
    """
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    if experiment_id is not None:
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
