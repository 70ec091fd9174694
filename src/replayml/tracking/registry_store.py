"""MLflow's model registry, as replayml uses it: versions with lineage tags, aliases, tags.

Every call goes through one client bound to the tracking store (the registry lives in the same
store), and every failure becomes a `TrackingError` / `ModelNotFoundError` that names the model
and says what to do: not authenticated (401), not allowed (403), unreachable, no such model.

Lineage of a version (MLflow 3): `client.create_model_version(name, source="models:/m-<id>",
run_id=..., model_id=...)` records the source run on the version, but only the fluent
`mlflow.register_model` also records the version on the logged model (its `mlflow.modelVersions`
tag), and that one reads the process-wide tracking URI. We call the client and add the tag
ourselves. A local SQLite registry also resolves `models:/m-<id>` through the process-wide URI
(it would otherwise open, and create, `./mlflow.db`), so that URI is scoped to the call.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from replayml.errors import ConfigError, ReplaymlError, TrackingError
from replayml.tracking.store import (
    StoreSpec,
    client_for_existing_store,
    explain,
    process_tracking_uri,
    run_url,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # MLflow's own link from a logged model to versions
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
_HTTP_STATUS = re.compile(r"error code (\d{3})\b")


def model_version_url(
    spec: StoreSpec, name: str, version: str, recorded_ui: str | None = None
) -> str:
    """The version's page in the MLflow UI (`<ui>/#/models/<name>/versions/<version>`), on the
    same UI address as the run links (`run_url`): the one given now, else `recorded_ui` (the
    source run's `tracking.ui_url`), else the store's."""
    from urllib.parse import quote

    ui = run_url(spec, "0", "0", recorded_ui).split("/#/", 1)[0]  # one rule for every link
    quoted = quote(name, safe="!'()*~")  # as the UI's route does (encodeURIComponent)
    return f"{ui}/#/models/{quoted}/versions/{version}"


class ModelNotFoundError(ReplaymlError):
    """A registered model, a version or an alias does not exist in the store."""


@dataclass(frozen=True)
class VersionRecord:
    """One model version as the registry holds it."""

    name: str
    version: str
    run_id: str
    source: str
    created_ms: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def tag(self, key: str, default: str = "") -> str:
        """The value of the `replayml.<key>` tag."""
        return self.tags.get("replayml." + key, default)


def _status(exc: BaseException) -> int | None:
    found = _HTTP_STATUS.search(str(exc))
    return int(found.group(1)) if found else None


def registry_error(exc: BaseException, spec: StoreSpec, action: str) -> ReplaymlError:
    """A clear message for a failed registry request; `action` says what was attempted."""
    status = _status(exc)
    code = str(getattr(exc, "error_code", ""))
    where = spec.display_uri
    if status == 403 or code == "PERMISSION_DENIED":
        return TrackingError(
            f"the tracking server at {where} refused to {action}: permission denied (403). The "
            f"user in MLFLOW_TRACKING_USERNAME needs EDIT (or MANAGE) permission on that "
            f"registered model; ask an MLflow admin to grant it"
        )
    if status == 401 or code == "UNAUTHENTICATED":
        return TrackingError(
            f"the tracking server at {where} refused to {action}: not authenticated (401); set "
            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment"
        )
    if code in _NOT_FOUND or status == 404:
        from replayml.redact import redact_text

        text = redact_text(str(exc)).strip()
        first = text.splitlines()[0][:300] if text else code
        return ModelNotFoundError(
            f"cannot {action} in {where}: {first}. List what exists with `replayml models` "
            f"or check --tracking-uri"
        )
    if code == "INVALID_PARAMETER_VALUE" or status == 400:  # the request, not the store
        from replayml.redact import redact_text

        text = redact_text(str(exc)).strip()
        first = text.splitlines()[0][:300] if text else code
        return ConfigError(f"cannot {action} in {where}: {first}")
    return explain(exc, spec)


@contextmanager
def _process_tracking_uri(spec: StoreSpec) -> Iterator[None]:
    """Point MLflow's process-wide URI at this store for one call (local stores only)."""
    if not spec.is_local:
        yield
        return
    with process_tracking_uri(spec.uri):
        yield


class RegistryStore:
    """The model registry of one tracking store."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self.client: Any = client_for_existing_store(spec)

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ReplaymlError:
            raise
        except Exception as exc:  # mlflow, requests and sqlalchemy raise many types
            raise registry_error(exc, self.spec, action) from exc

    def _record(self, mv: Any, aliases: tuple[str, ...] | None = None) -> VersionRecord:
        return VersionRecord(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or "",
            source=mv.source or "",
            created_ms=int(mv.creation_timestamp or 0),
            tags=dict(mv.tags or {}),
            aliases=tuple(sorted(mv.aliases or ())) if aliases is None else aliases,
        )

    # ------------------------------------------------------------------ registered models

    def model_exists(self, name: str) -> bool:
        """Whether a registered model of that name exists."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if str(exc.error_code) in _NOT_FOUND:
                return False
            raise registry_error(exc, self.spec, f"read registered model {name!r}") from exc
        except Exception as exc:
            raise registry_error(exc, self.spec, f"read registered model {name!r}") from exc
        return True

    def ensure_model(self, name: str, description: str = "") -> None:
        """Create the registered model unless it exists (a concurrent creation is fine)."""
        from mlflow.exceptions import MlflowException

        if self.model_exists(name):
            return
        try:
            self.client.create_registered_model(name, description=description or None)
        except MlflowException as exc:
            if "ALREADY_EXISTS" not in str(exc.error_code):
                raise registry_error(exc, self.spec, f"create registered model {name!r}") from exc
        except Exception as exc:
            raise registry_error(exc, self.spec, f"create registered model {name!r}") from exc

    def model_tags(self, name: str) -> dict[str, str]:
        """Tags of the registered model."""
        model = self._call(
            f"read registered model {name!r}", lambda: self.client.get_registered_model(name)
        )
        return dict(model.tags or {})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        """Set one tag on the registered model."""
        self._call(
            f"tag registered model {name!r}",
            lambda: self.client.set_registered_model_tag(name, key, value),
        )

    def models(self) -> list[tuple[str, str, dict[str, str]]]:
        """Every registered model: (name, latest version, alias -> version), by name."""
        found: list[Any] = []
        token = None
        while True:
            page = self._call(
                "list registered models",
                lambda t=token: self.client.search_registered_models(  # type: ignore[misc]
                    max_results=1000, page_token=t
                ),
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        out = []
        for m in sorted(found, key=lambda m: m.name):
            latest = max((int(v.version) for v in m.latest_versions or []), default=0)
            aliases = {str(a): str(v) for a, v in (m.aliases or {}).items()}
            out.append((str(m.name), str(latest or "-"), aliases))
        return out

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version of the registered model."""
        model = self._call(
            f"read registered model {name!r}", lambda: self.client.get_registered_model(name)
        )
        return {str(a): str(v) for a, v in (model.aliases or {}).items()}

    # ------------------------------------------------------------------------ versions

    def create_version(
        self, name: str, model_uri: str, run_id: str, run_link: str, tags: dict[str, str]
    ) -> VersionRecord:
        """A new version of `name` from a logged model, linked to its run both ways."""
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else ""

        def create() -> Any:
            with _process_tracking_uri(self.spec):
                return self.client.create_model_version(
                    name,
                    source=model_uri,
                    run_id=run_id,
                    tags=tags,
                    run_link=run_link,
                    model_id=model_id or None,
                    await_creation_for=0,
                )

        mv = self._call(f"create a version of registered model {name!r}", create)
        if model_id:
            self._link_logged_model(model_id, name, str(mv.version))
        return self._record(mv, ())

    def _link_logged_model(self, model_id: str, name: str, version: str) -> None:
        """Record the version on the logged model, as `mlflow.register_model` does."""
        action = f"link logged model {model_id} to {name} version {version}"
        model = self._call(action, lambda: self.client.get_logged_model(model_id))
        try:
            linked = json.loads(model.tags.get(MODEL_VERSIONS_TAG) or "[]")
        except json.JSONDecodeError:
            linked = []
        linked.append({"name": name, "version": version})
        self._call(
            action,
            lambda: self.client.set_logged_model_tags(
                model_id, {MODEL_VERSIONS_TAG: json.dumps(linked)}
            ),
        )

    def input_columns(self, model_uri: str) -> list[str] | None:
        """The input columns of a logged model's signature (`models:/m-<id>` or an artifact
        URI), in its order; None when the model or its signature cannot be read."""
        import tempfile

        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        try:
            if model_uri.startswith("models:/m-"):
                logged = self.client.get_logged_model(model_uri.removeprefix("models:/"))
                location = str(logged.artifact_location)
            elif model_uri.startswith("runs:/"):
                run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
                location = f"{self.client.get_run(run_id).info.artifact_uri}/{path}"
            elif model_uri.startswith("models:/"):
                return None  # another registry URI: not a model of its own
            else:
                location = model_uri
            # resolving an artifact URI reads the process-wide tracking URI: scope it
            with tempfile.TemporaryDirectory() as tmp, _process_tracking_uri(self.spec):
                path = download_artifacts(
                    artifact_uri=location.rstrip("/") + "/MLmodel",
                    dst_path=tmp,
                    tracking_uri=self.spec.uri,
                )
                schema = Model.load(path).get_input_schema()
        except Exception:  # a deleted model, an unreachable artifact store, an old format
            log.debug("the signature of %s is not readable", model_uri, exc_info=True)
            return None
        if schema is None or not schema.has_input_names():
            return None
        return [str(c) for c in schema.input_names()]

    def version(self, name: str, version: str) -> VersionRecord:
        """One version (its aliases included)."""
        mv = self._call(
            f"read version {version} of registered model {name!r}",
            lambda: self.client.get_model_version(name, str(version)),
        )
        return self._record(mv)

    def version_exists(self, name: str, version: str) -> bool:
        """Whether version `version` of `name` exists (a deleted one does not)."""
        from mlflow.exceptions import MlflowException

        action = f"read version {version} of registered model {name!r}"
        try:
            self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if str(exc.error_code) in _NOT_FOUND:
                return False
            raise registry_error(exc, self.spec, action) from exc
        except Exception as exc:
            raise registry_error(exc, self.spec, action) from exc
        return True

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of `name`, newest first, with the aliases each holds."""
        if not self.model_exists(name):
            raise ModelNotFoundError(
                f"there is no registered model {name!r} in {self.spec.display_uri}; register a "
                f"run with `replayml register RUN_ID --name {name}`"
            )
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases(name).items():
            by_version.setdefault(version, []).append(alias)
        escaped = name.replace("'", "\\'")
        found: list[Any] = []
        token = None
        while True:
            page = self._call(
                f"list versions of registered model {name!r}",
                lambda t=token: self.client.search_model_versions(  # type: ignore[misc]
                    f"name = '{escaped}'", max_results=1000, page_token=t
                ),
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        records = [
            self._record(mv, tuple(sorted(by_version.get(str(mv.version), [])))) for mv in found
        ]
        return sorted(records, key=lambda r: int(r.version), reverse=True)

    def versions_of_run(self, run_id: str) -> list[tuple[str, str]]:
        """(name, version) of every registered version made from run `run_id`."""
        found = self._call(
            f"list the registered versions of run {run_id}",
            lambda: self.client.search_model_versions(f"run_id = '{run_id}'", max_results=1000),
        )
        return sorted((mv.name, str(mv.version)) for mv in found)

    def holder(self, name: str, alias: str) -> str | None:
        """The version holding `alias`, or None when the alias is not set."""
        return self.aliases(name).get(alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` at `version` (no compare-and-set: see `replayml.registry`)."""
        self._call(
            f"set alias {alias!r} of registered model {name!r}",
            lambda: self.client.set_registered_model_alias(name, alias, str(version)),
        )

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on one version."""
        for key, value in tags.items():
            self._call(
                f"tag version {version} of registered model {name!r}",
                lambda k=key, v=value: self.client.set_model_version_tag(  # type: ignore[misc]
                    name, str(version), k, v
                ),
            )

    def round_trip(self, name: str) -> float:
        """Seconds one small read of the registered model takes (to size waits)."""
        start = time.perf_counter()
        self.model_tags(name)
        return time.perf_counter() - start
