"""One MLflow run's lifecycle and logging, all batched and within MLflow's limits.

A run is FINISHED only when the block completes; any exception (or `sys.exit`) marks it FAILED
with the traceback as an artifact, and SIGTERM marks it KILLED before the process exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from replayml.errors import ReplaymlError, RunKilled, TrackingError
from replayml.redact import redact_text
from replayml.tracking.store import (
    StoreSpec,
    explain,
    open_experiment,
    process_tracking_uri,
    run_url,
)

log = logging.getLogger(__name__)

TAG_PREFIX = "replayml."
MAX_PARAM_VAL = 6000
MAX_TAG_VAL = 8000
MAX_KEY = 250


def safe_artifact_path(path: str) -> str:
    """Refuse artifact paths that could escape the run's artifact folder."""
    decoded = unquote(unquote(path))
    pure = PurePosixPath(decoded.replace("\\", "/"))
    if not path or pure.is_absolute() or ".." in pure.parts or ":" in decoded:
        raise ReplaymlError(
            f"artifact path {path!r} is not allowed: use a relative path without '..', "
            f"drive letters or URL-encoded escapes"
        )
    return str(pure)


class _NoPipVersionWarning(logging.Filter):
    """Drop MLflow's warning that `pip` is not installed, once per logged model.

    The environment is installed by uv from the lock (whose hash the run records), so the
    virtualenv has no `pip`; MLflow then writes `pip` without a version into the model's
    conda.yaml and warns on every run. The pip requirements are still pinned.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to resolve installed pip version")


#: attempts at logging a dataset that parallel jobs may be creating at the same moment
DATASET_ATTEMPTS = 5


def _inserted_concurrently(exc: BaseException) -> bool:
    """Whether a failed write clashed with a row another writer had just inserted."""
    seen: BaseException | None = exc
    while seen is not None:
        text = f"{type(seen).__name__}: {seen}"
        if "IntegrityError" in text or "UNIQUE constraint failed" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class RunHandle:
    """An open run: its id, link, and batched logging calls."""

    client: Any
    spec: StoreSpec
    experiment_id: str
    run_id: str
    skipped_params: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return run_url(self.spec, self.experiment_id, self.run_id)

    def log_params(self, params: dict[str, str]) -> list[str]:
        """Log params in batches; values over MLflow's limit are skipped and returned."""
        from mlflow.entities import Param

        batch: list[Param] = []
        for key, value in params.items():
            if len(value) > MAX_PARAM_VAL or len(key) > MAX_KEY:
                self.skipped_params.append(key)
                continue
            batch.append(Param(key, value))
        for i in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[i : i + 100], synchronous=True)
        return list(self.skipped_params)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags in batches; values over the limit are cut with a marker (full copies are
        always in the config and lineage artifacts)."""
        from mlflow.entities import RunTag

        items = []
        for key, value in tags.items():
            text = str(value)
            if len(text) > MAX_TAG_VAL:
                text = text[: MAX_TAG_VAL - 40] + " ...[cut; see lineage.json]"
            items.append(RunTag(key, text))
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100], synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Log final metrics in one batch."""
        self.log_curves({k: [v] for k, v in metrics.items()}, first_step=step)

    def log_curves(self, curves: dict[str, list[float]], first_step: int = 1) -> None:
        """Log per-iteration curves, up to 1000 values per request."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(v), now, first_step + i)
            for name, values in curves.items()
            for i, v in enumerate(values)
        ]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000], synchronous=True)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write text as an artifact file."""
        self.client.log_text(self.run_id, text, safe_artifact_path(artifact_file))

    def log_exact_text(self, text: str, artifact_file: str) -> None:
        """Write text as an artifact byte for byte: CRLF line endings and (as surrogates, see
        `lineage.code`) bytes that are not UTF-8 are kept (a patch must apply as recorded)."""
        import tempfile

        target = Path(safe_artifact_path(artifact_file))
        with tempfile.TemporaryDirectory(prefix="replayml-artifact-") as tmp:
            local = Path(tmp) / target.name
            local.write_bytes(text.encode("utf-8", "surrogateescape"))
            parent = str(target.parent)
            self.client.log_artifact(self.run_id, str(local), None if parent == "." else parent)

    def log_artifact(self, path: Path, artifact_dir: str | None = None) -> None:
        """Upload a local file."""
        target = safe_artifact_path(artifact_dir) if artifact_dir else None
        self.client.log_artifact(self.run_id, str(path), target)

    def log_dataset(
        self, sample: Any, *, name: str, digest: str, source: str, context: str
    ) -> None:
        """Record the training data as a run input carrying our own content digest."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # "source can be interpreted in multiple ways" (file:)
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(sample, source=source, name=name, digest=digest[:36])
        inp = DatasetInput(
            dataset=dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
        )
        for attempt in range(DATASET_ATTEMPTS):
            try:
                self.client.log_inputs(self.run_id, datasets=[inp])
                return
            except Exception as exc:  # the store's or the server's wrapping of the SQL error
                # MLflow looks the dataset up, then inserts it: a job logging the same dataset
                # at the same moment can insert it first; the next attempt finds and reuses it
                if attempt + 1 == DATASET_ATTEMPTS or not _inserted_concurrently(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def log_lightgbm(
        self, booster: Any, example: Any, requirements: list[str], best_iteration: int
    ) -> str:
        """Log the booster with MLflow's LightGBM flavour, signature and input example.

        The signature is inferred from the small example, never from the training matrix.
        Returns the model URI.
        """
        import mlflow
        import mlflow.lightgbm
        from mlflow.models import infer_signature
        from mlflow.types.schema import ColSpec, Schema

        prediction = booster.predict(example, num_iteration=best_iteration)
        signature = infer_signature(example, prediction)
        # the booster needs every feature: a column that happens to be missing in the example's
        # rows is still required (inferred as optional, leaving it out would crash LightGBM)
        signature.inputs = Schema(
            [ColSpec(c.type, c.name, required=True) for c in signature.inputs.inputs]
        )
        # log_model reads the global tracking URI, and setting it also exports
        # MLFLOW_TRACKING_URI to child processes: scope it to this call
        # the logged model belongs to the run's experiment (not MLflow's Default experiment)
        env_log = logging.getLogger("mlflow.utils.environment")
        no_pip = _NoPipVersionWarning()
        env_log.addFilter(no_pip)
        try:
            with process_tracking_uri(self.spec.uri, self.experiment_id):
                info = mlflow.lightgbm.log_model(
                    booster,
                    name="model",
                    run_id=self.run_id,
                    input_example=example,
                    signature=signature,
                    pip_requirements=requirements,
                )
        finally:
            env_log.removeFilter(no_pip)
        return str(info.model_uri)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises `RunKilled` in the main thread, so cleanup in `finally` blocks runs."""

    def handler(signum: int, frame: Any) -> None:
        raise RunKilled(f"received signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def tracked_run(
    spec: StoreSpec, run_name: str | None, tags: dict[str, str], parent_run_id: str | None = None
) -> Iterator[RunHandle]:
    """Create a run, yield its handle, and always leave it in a terminal state."""
    client, experiment_id = open_experiment(spec)
    # a leaked MLFLOW_RUN_ID must never make this process write into another run
    os.environ.pop("MLFLOW_RUN_ID", None)
    start_tags = {**tags, **process_tags()}
    if parent_run_id:
        start_tags["mlflow.parentRunId"] = parent_run_id
    try:
        run = client.create_run(experiment_id, run_name=run_name, tags=start_tags)
    except Exception as exc:
        raise explain(exc, spec) from exc
    handle = RunHandle(client, spec, experiment_id, run.info.run_id)
    stop = start_heartbeat(client, handle.run_id)
    try:
        with sigterm_raises():
            yield handle
    except RunKilled as exc:
        _finish(handle, "KILLED", traceback.format_exc())
        exc.replayml_run_id = handle.run_id  # type: ignore[attr-defined]
        raise
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        _finish(handle, status, traceback.format_exc())
        with contextlib.suppress(AttributeError, TypeError):  # the one line said names the run
            exc.replayml_run_id = handle.run_id  # type: ignore[attr-defined]
        raise
    else:
        handle.client.set_terminated(handle.run_id, "FINISHED")
    finally:
        stop.set()


HEARTBEAT_SECONDS = 30.0


def pid_space() -> str:
    """Where this process's pid means something: the kernel's boot id and the pid namespace
    (Linux). Containers and CI runners often share a host name; a pid is only worth checking
    from the same boot and namespace. "" where the system does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def process_start(pid: int | None = None) -> float | None:
    """When process `pid` (default: this one) started, as the kernel counts it (psutil): one
    clock for the record and for a later check. Wall-clock time drifts from it (here by most
    of a second after an hour's uptime), so it cannot tell a reused pid from the run's own."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def process_tags() -> dict[str, str]:
    """Which process on which host keeps a run alive, and its first heartbeat (for doctor)."""
    started = process_start()
    return {
        f"{TAG_PREFIX}pid": str(os.getpid()),
        **({f"{TAG_PREFIX}pid_started": f"{started:.2f}"} if started is not None else {}),
        f"{TAG_PREFIX}host": socket.gethostname(),
        f"{TAG_PREFIX}pid_space": pid_space(),
        f"{TAG_PREFIX}heartbeat": str(int(time.time())),
    }


def start_heartbeat(client: Any, run_id: str) -> threading.Event:
    """Refresh the run's heartbeat in a daemon thread until the returned event is set."""
    stop = threading.Event()
    threading.Thread(
        target=_heartbeat, args=(client, run_id, stop), daemon=True, name="heartbeat"
    ).start()
    return stop


def _heartbeat(client: Any, run_id: str, stop: threading.Event) -> None:
    """Refresh the heartbeat tag while the run is open (`replayml doctor` reads it)."""
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            client.set_tag(run_id, f"{TAG_PREFIX}heartbeat", str(int(time.time())))
        except Exception:  # a missed beat is harmless; the run's own calls report errors
            log.debug("heartbeat for %s failed", run_id)


def _finish(handle: RunHandle, status: str, trace: str) -> None:
    """Best effort: record the traceback and the terminal status of a failed run."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "traceback.txt"
            path.write_text(trace)
            handle.client.log_artifact(handle.run_id, str(path))
    except Exception:  # the store may be what failed; the status below matters more
        log.warning("could not upload the traceback of run %s", handle.run_id)
    cause = trace.strip().splitlines()[-1][:500] if trace.strip() else "unknown"
    try:
        handle.client.set_tag(handle.run_id, f"{TAG_PREFIX}error", cause)
        handle.client.set_terminated(handle.run_id, status)
    except Exception as exc:
        raise TrackingError(
            f"run {handle.run_id} stopped ({redact_text(cause)}) and could not be marked "
            f"{status} in {handle.spec.display_uri}: {exc}; run `replayml doctor` once the "
            f"store is back"
        ) from exc
