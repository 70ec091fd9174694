"""Read a recorded run back from the tracking store: params, tags, metrics and artifacts.

Used by replay (and review): a run id that does not exist, is deleted, is not a replayml run or
did not finish is refused here with a message naming the id and the (redacted) store URI.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replayml.errors import ReplaymlError, RunNotFoundError, TrackingError
from replayml.redact import redact_text
from replayml.tracking.store import StoreSpec, client_for_existing_store, explain, run_url

log = logging.getLogger(__name__)

TAG_PREFIX = "replayml."
MARKER_TAG = TAG_PREFIX + "schema_version"  # every run the pipeline creates has it
#: the run's resolved config, and the uncommitted changes of a run from a dirty tree
CONFIG_ARTIFACT = "replayml/config.yaml"
DIFF_ARTIFACT = "replayml/code.diff"
#: every test row's group (user-day), label and score, in the test matrix's order
TEST_SCORES_ARTIFACT = "replayml/test_scores.parquet"


@dataclass(frozen=True)
class RecordedRun:
    """One run as the store holds it (metrics: the last logged value of each key)."""

    run_id: str
    experiment_id: str
    experiment_name: str
    status: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def tag(self, key: str, default: str = "") -> str:
        """The value of the `replayml.<key>` tag."""
        return self.tags.get(TAG_PREFIX + key, default)

    def tags_under(self, prefix: str) -> dict[str, str]:
        """`replayml.<prefix>*` tags, keyed by what follows the prefix."""
        full = TAG_PREFIX + prefix
        return {k.removeprefix(full): v for k, v in self.tags.items() if k.startswith(full)}


class RunReader:
    """Reads runs and their artifacts from one tracking store, and tags runs after a replay."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self.client: Any = client_for_existing_store(spec)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self._experiments: dict[str, Any] = {}

    def _not_found(self, run_id: str, why: str) -> RunNotFoundError:
        return RunNotFoundError(
            f"run {run_id} {why} in the tracking store {self.spec.display_uri}; check the run id "
            f"(the run's page in the MLflow UI shows it) or point --tracking-uri / "
            f"MLFLOW_TRACKING_URI at the store that holds it"
        )

    def _explain(self, exc: BaseException) -> TrackingError:
        # a request error's text can carry the URI with its credentials
        return TrackingError(redact_text(str(explain(exc, self.spec))))

    def _experiment(self, experiment_id: str) -> Any:
        if experiment_id not in self._experiments:
            self._experiments[experiment_id] = self.client.get_experiment(experiment_id)
        return self._experiments[experiment_id]

    def _to_recorded(self, run: Any) -> RecordedRun:
        exp = self._experiment(run.info.experiment_id)
        return RecordedRun(
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            experiment_name=exp.name,
            status=run.info.status,
            url=run_url(
                self.spec,
                run.info.experiment_id,
                run.info.run_id,
                run.data.params.get("tracking.ui_url"),
            ),
            params=dict(run.data.params),
            tags=dict(run.data.tags),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
        )

    def run(self, run_id: str, *, finished: bool = True) -> RecordedRun:
        """A replayml run by id; refuses unknown, deleted, foreign and (if `finished`)
        unfinished runs with `RunNotFoundError`."""
        from mlflow.exceptions import MlflowException

        run_id = run_id.strip()
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc):
                raise self._not_found(run_id, "does not exist") from None
            raise self._explain(exc) from exc
        except Exception as exc:  # requests/sqlalchemy raise many types for an unusable store
            raise self._explain(exc) from exc
        if run.info.lifecycle_stage == "deleted":
            raise self._not_found(run_id, "is deleted (restore it in the MLflow UI first)")
        if self._experiment(run.info.experiment_id).lifecycle_stage == "deleted":
            raise self._not_found(run_id, "belongs to a deleted experiment")
        if run.data.tags.get("replayml.sweep.role") == "parent":
            sweep = run.data.tags.get("replayml.sweep_id", run_id)
            raise RunNotFoundError(
                f"run {run_id} is the parent run of sweep {sweep}: it trained nothing itself; "
                f"use one of its children, listed by `replayml sweep {sweep}`"
            )
        if MARKER_TAG not in run.data.tags:
            raise self._not_found(
                run_id, "is not a replayml run (it has no replayml.* lineage tags)"
            )
        if finished and run.info.status != "FINISHED":
            raise ReplaymlError(
                f"run {run_id} in {self.spec.display_uri} is {run.info.status}, not FINISHED: "
                f"only finished runs have a complete record to replay"
            )
        return self._to_recorded(run)

    def text(self, run_id: str, artifact_path: str) -> str | None:
        """A text artifact of the run as written (line endings kept, bytes that are not UTF-8
        as surrogates), or None when the run does not have it."""

        def read(local: Path) -> str:
            with open(local, encoding="utf-8", errors="surrogateescape", newline="") as f:
                return f.read()

        return self._read(run_id, artifact_path, read)

    def table(self, run_id: str, artifact_path: str) -> Any:
        """A Parquet artifact of the run as a DataFrame, or None when the run does not have it."""
        import pandas as pd

        return self._read(run_id, artifact_path, pd.read_parquet)

    def _read(self, run_id: str, artifact_path: str, read: Callable[[Path], Any]) -> Any:
        from mlflow.exceptions import MlflowException

        parent = str(Path(artifact_path).parent)
        try:
            listed = self.client.list_artifacts(run_id, "" if parent == "." else parent)
        except (MlflowException, OSError) as exc:
            raise self._explain(exc) from exc
        if artifact_path not in {f.path for f in listed}:
            return None
        with tempfile.TemporaryDirectory(prefix="replayml-artifact-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, artifact_path, tmp)
            except Exception as exc:  # requests/sqlalchemy/OS errors of an unusable store
                raise self._explain(exc) from exc
            return read(Path(local))

    def missing_artifacts_hint(self, run_id: str) -> str:
        """Why a run's artifacts may look missing: "" unless they are in a local folder that
        does not exist here (logged on another machine through a server that stores only
        their location)."""
        from urllib.parse import unquote, urlparse

        try:
            uri = str(self.client.get_run(run_id).info.artifact_uri)
        except Exception as exc:  # requests/sqlalchemy raise many types for an unusable store
            raise self._explain(exc) from exc
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file") or Path(unquote(parsed.path)).exists():
            return ""
        return (
            f" (its artifact location {uri} does not exist on this machine: the run was "
            f"logged where its artifacts stayed on the logging machine's disk; a team server "
            f"should store them itself: `mlflow server --artifacts-destination ...`)"
        )

    def find(self, experiment_id: str, tag: str, value: str) -> list[RecordedRun]:
        """Runs of an experiment (any status) whose tag `tag` equals `value`."""
        escaped = value.replace("'", "\\'")
        try:
            runs = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{tag}` = '{escaped}'"
            )
            return [self._to_recorded(r) for r in runs]
        except Exception as exc:  # requests/sqlalchemy raise many types for an unusable store
            raise self._explain(exc) from exc

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Add tags to an existing run (e.g. a replay's verdict on the original)."""
        from mlflow.entities import RunTag

        try:
            self.client.log_batch(
                run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True
            )
        except Exception as exc:
            raise self._explain(exc) from exc
