"""The model registry with lineage and A/B labels: register, list, promote, roll back.

A version is created from a run's logged model (`replayml.model_uri`) and carries the run's
lineage as `replayml.*` tags (run id and link, data and config hashes, overrides, commit, dirty
flag, replay verdict, key metrics, the model's input columns, the sweep it came from and
whether it was the sweep's best child, A/B label and group, who and when). Runs that cannot
be trusted are refused unless forced: a run that did not finish, a run tagged not replayable,
a dirty run without its recorded diff.

Aliases (`prod`, `ab`, ...) move by compare-and-set. MLflow has no atomic alias update, so a
move is an honest best effort in five steps: read the holder (and check `--expect-version`),
claim the move with a unique token in a registered-model tag, wait a few round trips, give up
if another claim or another holder appeared meanwhile, then set the alias, write the audit
tags and read everything back. Two movers racing from the same holder: the later claim wins
and the earlier one stops before touching the alias; a mover that claims after the winner has
set the alias sees the holder changed and stops. Every move leaves `replayml.alias.<alias>.
previous` and an audit tag (who, when, from -> to, the new holder's run) on the new holder,
an audit tag on the old one, and the last move (with the new holder's run) in the registered
model's `replayml.alias.<alias>.last_move` tag; `rollback` moves the alias back to the holder's
recorded previous version and leaves that version's own `previous` as it was, so a second
rollback goes one step further back. Deleting a version takes its aliases (and tags) with it:
the last move still says which version held the alias and which held it before, so commands
name the deleted holder instead of calling the alias never set, and `rollback` restores the
holder before it.
A move to a version whose model reads other input columns than the holder's is warned about,
never refused: consumers of the alias must build the added columns.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from replayml.errors import ConfigError, ReplaymlError
from replayml.tracking.read import DIFF_ARTIFACT
from replayml.tracking.registry_store import (
    ModelNotFoundError,
    RegistryStore,
    VersionRecord,
    model_version_url,
)
from replayml.tracking.store import StoreSpec

if TYPE_CHECKING:
    from replayml.tracking.read import RecordedRun

log = logging.getLogger(__name__)

__all__ = [
    "AliasConflictError",
    "AliasMove",
    "DeletedHolder",
    "ModelNotFoundError",
    "ModelRow",
    "PromotionRefused",
    "Registration",
    "RegistrationRefused",
    "RunRef",
    "aliases_text",
    "deleted_holder",
    "models_markdown",
    "models_rich",
    "model_rows",
    "move_alias",
    "promote",
    "register",
    "resolve_model_uri",
    "resolve_run_ref",
    "rollback",
    "same_run_versions",
    "set_ab",
    "sweep_tags",
    "version_inputs",
]

P = "replayml."
KEY_METRICS = ("test_auc", "test_avg_precision", "test_logloss")
KEY_METRIC_PREFIXES = ("test_ndcg_at_", "test_recall_at_")
SHORT_NAMES = {"test_auc": "auc", "test_avg_precision": "ap", "test_logloss": "logloss"}
NO_VERSION = "none"
RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow gives a run (a uuid4's hex)
INPUTS_TAG = P + "inputs"  # the logged model's input columns (JSON list), read at register
MAX_INPUTS_TAG = 5000  # a longer list is not tagged: it is read from the signature instead


class RegistrationRefused(ReplaymlError):
    """A run that should not become a model version (use --force to override)."""


class PromotionRefused(ReplaymlError):
    """An alias move to a version that should not serve under it (override: --force)."""


class AliasConflictError(ReplaymlError):
    """An alias move lost a race or found another holder than expected; nothing was changed
    unless the message says so."""


def _user() -> str:
    from replayml.lineage.environment import login_name

    return login_name()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics a version carries as tags: AUC, AP, logloss, NDCG@k and recall@k."""
    return {
        k: v for k, v in metrics.items() if k in KEY_METRICS or k.startswith(KEY_METRIC_PREFIXES)
    }


def short_metric(name: str) -> str:
    """`test_ndcg_at_10` -> `ndcg@10`."""
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    return name.removeprefix("test_").replace("_at_", "@")


# ------------------------------------------------------------------------------ register


@dataclass(frozen=True)
class Registration:
    """A version created from a run."""

    name: str
    version: str
    run_id: str
    run_url: str
    model_uri: str
    tags: dict[str, str]
    forced_reasons: tuple[str, ...] = ()
    alias_move: AliasMove | None = None


ENV_TAG = P + "replay.environment"  # `same`, or the keys that differed (see replay.py)


def elsewhere_verdict(tags: dict[str, str]) -> str:
    """The environment keys that differed when a run's replay came out DIFFERENT in another
    environment than the run's own (`replayml.replay.environment`), else ""."""
    env = tags.get(ENV_TAG, "")
    if tags.get(P + "replay.verdict") != "DIFFERENT" or env in ("", "same"):
        return ""
    return env


def _replay_elsewhere(run_id: str, commit: str, env: str) -> str:
    """How to clear a DIFFERENT verdict reached in another environment than the run's."""
    at = f" at the run's commit {commit[:12]}" if commit else " at the run's commit"
    return (
        f"a replay in the run's own environment replaces that verdict: `replayml replay "
        f"{run_id} --env`, or `uv sync --frozen`{at} and then `replayml replay {run_id}`"
    )


def refusal_reasons(run: RecordedRun, diff: str | None) -> list[str]:
    """Why a run should not be registered (empty when it may be)."""
    reasons = []
    if run.status != "FINISHED":
        reasons.append(f"run {run.run_id} is {run.status}, not FINISHED")
    if run.tag("replayable") != "true":
        why = run.tag("not_replayable_reasons") or "no replayable tag"
        reasons.append(f"run {run.run_id} is not replayable (replayml.replayable=false: {why})")
    elsewhere = elsewhere_verdict(run.tags)
    if elsewhere:
        reasons.append(
            f"run {run.run_id} was replayed in another environment than its own ({elsewhere}) "
            f"and that replay came out DIFFERENT (replay run {run.tag('replay.run_id') or '?'}), "
            f"which may come from the environment alone; "
            + _replay_elsewhere(run.run_id, run.tag("code.commit"), elsewhere)
        )
    elif run.tag("replay.verdict") == "DIFFERENT":
        reasons.append(
            f"run {run.run_id} was replayed and the replay came out DIFFERENT (replay run "
            f"{run.tag('replay.run_id') or '?'}): see `replayml replay {run.run_id}`"
        )
    if run.tag("code.dirty") == "true" and not (diff or "").strip():
        reasons.append(
            f"run {run.run_id} was trained from a dirty git tree and its diff "
            f"({DIFF_ARTIFACT}) is not recorded: its code cannot be recovered"
        )
    return reasons


def sweep_tags(
    run_id: str, run_tags: dict[str, str], parent_tags: dict[str, str] | None
) -> dict[str, str]:
    """The `replayml.sweep*` tags a version carries when its run was a sweep's child: the
    sweep id, its parent run, the objective the sweep ranked by and whether this run was the
    best child (`true`, `false`, or `unknown` when the parent records no best).

    `parent_tags` are the parent run's tags (None: not readable)."""
    sweep_id = run_tags.get(P + "sweep_id", "")
    if not sweep_id or run_tags.get(P + "sweep.role") == "parent":
        return {}
    tags = {P + "sweep_id": sweep_id}
    parent_id = run_tags.get("mlflow.parentRunId", "")
    if parent_id:
        tags[P + "sweep.parent_run_id"] = parent_id
    parent = parent_tags or {}
    if parent.get(P + "sweep.objective"):
        tags[P + "sweep.objective"] = parent[P + "sweep.objective"]
    if parent.get(P + "sweep.objective_direction"):
        tags[P + "sweep.objective_direction"] = parent[P + "sweep.objective_direction"]
    best = parent.get(P + "sweep.best_run_id", "")
    tags[P + "sweep.best"] = ("true" if best == run_id else "false") if best else "unknown"
    # best of the jobs that finished: some failed, were stopped or never ran
    unfinished = (
        parent.get(P + "sweep.failed", "0") not in ("", "0")
        or parent.get(P + "sweep.killed", "0") not in ("", "0")
        or parent.get(P + "sweep.never_ran", "[]") not in ("", "[]")
    )
    if unfinished:
        tags[P + "sweep.complete"] = "false"
    return tags


def _parent_tags(client: object, run_tags: dict[str, str]) -> dict[str, str] | None:
    """The tags of a sweep child's parent run (None: not a child, or not readable)."""
    parent_id = run_tags.get("mlflow.parentRunId", "")
    if not parent_id or not run_tags.get(P + "sweep_id"):
        return None
    try:
        return dict(client.get_run(parent_id).data.tags)  # type: ignore[attr-defined]
    except Exception:  # a deleted parent: the child's own tags still name the sweep
        log.debug("parent run %s is not readable", parent_id)
        return None


def lineage_tags(
    run: RecordedRun, ab_label: str | None, ab_group: str | None, user: str, when: str
) -> dict[str, str]:
    """The `replayml.*` tags a version carries about the run it came from."""
    tags = {
        P + "run_id": run.run_id,
        P + "run_url": run.url,
        P + "experiment": run.experiment_name,
        P + "dataset": run.tag("dataset"),
        P + "data.dvc_hash": run.tag("data.dvc_hash"),
        P + "config_hash": run.tag("config_hash"),
        P + "overrides": run.tag("overrides"),  # redacted as the run recorded them
        P + "model.kind": run.tag("model.kind"),
        P + "model_uri": run.tag("model_uri"),
        P + "code.commit": run.tag("code.commit"),
        P + "code.branch": run.tag("code.branch"),
        P + "code.dirty": run.tag("code.dirty"),
        P + "replayable": run.tag("replayable"),
        P + "replay.verdict": run.tag("replay.verdict") or "not replayed",
        P + "registered_by": user,
        P + "registered_at": when,
    }
    if run.tag("replay.run_id"):
        tags[P + "replay.run_id"] = run.tag("replay.run_id")
    if run.tag("replay.environment"):
        tags[ENV_TAG] = run.tag("replay.environment")
    for key in ("train_start", "train_end", "valid_start", "valid_end", "test_start", "test_end"):
        if run.tag(f"dates.{key}"):
            tags[P + f"dates.{key}"] = run.tag(f"dates.{key}")
    for name, value in key_metrics(run.metrics).items():
        tags[P + f"metric.{name}"] = repr(float(value))
    if ab_label:
        tags[P + "ab_label"] = ab_label
    if ab_group:
        tags[P + "ab_group"] = ab_group
    return {k: v for k, v in tags.items() if v != ""}


def check_model_name(name: str) -> None:
    """Refuse a registered-model name that registry URIs or listings would misread: `@` or `/`
    (`models:/reco@x/1` reads as alias `x/1` of `reco`; MLflow's `models:/NAME/VERSION` takes
    no `/` in NAME), or blanks around it (a separate model that lists like the one without)."""
    stripped = name.strip()
    fix = re.sub(r"[@/\s]+", "-", stripped).strip("-") or "reco"
    if not stripped:
        problem = "is blank"
    elif name != stripped:
        problem = (
            f"has leading or trailing whitespace: it would be another model than {stripped!r}, "
            f"listed just like it"
        )
    elif "@" in name:
        before, _, after = name.partition("@")
        problem = (
            f"contains '@': models:/{name}/1 would read as alias {after + '/1'!r} of model "
            f"{before!r}, not as version 1 of {name!r}"
        )
    elif "/" in name:
        problem = (
            f"contains '/': MLflow's models:/NAME/VERSION and models:/NAME@ALIAS URIs cannot "
            f"name it (models:/{name}/1 has one part too many)"
        )
    else:
        return
    raise ConfigError(
        f"--name {name!r} {problem}. Use a name without '@', '/' or blanks around it, e.g. "
        f"--name {fix}; nothing was created"
    )


def register(
    run_id: str,
    name: str,
    *,
    spec: StoreSpec,
    alias: str | None = None,
    ab_label: str | None = None,
    ab_group: str | None = None,
    force: bool = False,
    project: Path | None = None,
    new_alias: bool = False,
) -> Registration:
    """Create a version of registered model `name` from the run's logged model.

    Refuses (`ConfigError`) a model name with `@`, `/` or blanks around it, and
    (`RegistrationRefused`) a replay run (`replayml.replay_of`: register the run it
    replayed), and a run that did not finish, is not replayable, or was dirty without its
    recorded diff, unless `force` (then `replayml.forced=true` and the reasons are
    tagged); with `project`, also a run whose commit is on no git remote or whose data version
    is not in the DVC remote (others could not rebuild the version). With `alias`, the alias
    then moves to the new version (compare-and-set, audited); a new alias that looks like a
    slip of an existing one (`Prod`, `prdo` for `prod`) is refused unless `new_alias`.
    """
    from replayml.tracking.read import RunReader

    check_model_name(name)  # before anything is created
    if alias:
        check_alias(alias)
    check_ab(ab_label, ab_group)
    reader = RunReader(spec)
    run = reader.run(run_id, finished=False)
    original = run.tag("replay_of")
    if original:  # its lineage tags describe the replay, not the model's origin: never forced
        raise RegistrationRefused(
            f"run {run.run_id} is a replay of run {original}: register {original} "
            f"(`replayml register {original} --name {name}`); its replay verdict is recorded "
            f"on it ({P}replay.verdict). A version of the replay would show the replay's own "
            f"verdict and none of the run's overrides, so --force does not apply"
        )
    model_uri = run.tag("model_uri")
    diff = reader.text(run.run_id, DIFF_ARTIFACT) if run.tag("code.dirty") == "true" else None
    reasons = refusal_reasons(run, diff)
    if project is not None:
        from replayml.lineage.sharing import sharing_gaps

        reasons += sharing_gaps(
            project,
            run.tag("code.commit"),
            run.tag("code.branch"),
            run.tag("data.dvc_hash"),
            run.tag("data.dvc_file"),
            on_remote=run.tag("code.on_remote"),
        )
    if reasons and not force:
        # a verdict reached in another environment is not the run's fault
        only_elsewhere = len(reasons) == 1 and bool(elsewhere_verdict(run.tags))
        fix = "Or pass" if only_elsewhere else "Fix the run, or pass"
        raise RegistrationRefused(
            "refusing to register: "
            + "; ".join(reasons)
            + f". {fix} --force to register it anyway (the version is then "
            f"tagged {P}forced=true with these reasons)"
        )
    if not model_uri:
        raise RegistrationRefused(
            f"run {run.run_id} has no logged model (no {P}model_uri tag: it failed before "
            f"logging one, is a popularity baseline, or ran with tracking.log_model=false): "
            f"nothing to register"
        )
    store = RegistryStore(spec)
    if alias and not new_alias:
        check_new_alias(store, name, alias)
    if alias and store.model_exists(name):
        holder = store.holder(name, alias)
        if holder is not None:
            change = _kind_change(
                run.tag("model.kind"), store.version(name, holder).tag("model.kind"),
                name, alias, holder,
            )  # fmt: skip
            if change and not force:
                raise RegistrationRefused(
                    f"refusing to register with --alias {alias}: {change[0]}"
                )
            reasons += change
    user, when = _user(), _now()
    tags = lineage_tags(run, ab_label, ab_group, user, when)
    tags.update(sweep_tags(run.run_id, run.tags, _parent_tags(reader.client, run.tags)))
    inputs = store.input_columns(model_uri)
    if inputs is not None and len(json.dumps(inputs)) <= MAX_INPUTS_TAG:
        tags[INPUTS_TAG] = json.dumps(inputs)
    if reasons:
        tags[P + "forced"] = "true"
        tags[P + "forced_reason"] = "; ".join(reasons)
    store.ensure_model(name, description="Registered by replayml; lineage in replayml.* tags.")
    created = store.create_version(name, model_uri, run.run_id, run.url, tags)
    move = None
    if alias:
        try:
            move = move_alias(store, name, alias, created.version, action="register")
        except AliasConflictError as exc:
            raise AliasConflictError(
                f"{exc}. Version {created.version} of {name} was registered without the alias; "
                f"move it later with `replayml promote {name} {created.version} --alias {alias}`"
            ) from None
    return Registration(
        name=name,
        version=created.version,
        run_id=run.run_id,
        run_url=run.url,
        model_uri=model_uri,
        tags=tags,
        forced_reasons=tuple(reasons),
        alias_move=move,
    )


def same_run_versions(
    name: str, run_id: str, *, spec: StoreSpec, exclude: str | None = None
) -> list[str]:
    """The versions of `name` made from run `run_id` (oldest first), except version `exclude`."""
    store = RegistryStore(spec)
    if not store.model_exists(name):
        return []
    found = [v.version for v in store.versions(name) if v.run_id == run_id]
    return sorted((v for v in found if v != exclude), key=int)


# ---------------------------------------------------------------------------- aliases


@dataclass(frozen=True)
class AliasMove:
    """One completed alias move."""

    name: str
    alias: str
    from_version: str | None
    to_version: str
    action: str
    by: str
    at: str
    token: str
    warnings: tuple[str, ...] = ()
    ab_change: str = ""  # what `promote --ab-label/--ab-group` set on the version, if anything

    @property
    def changed(self) -> bool:
        return self.from_version != self.to_version

    def describe(self) -> str:
        """One line for the terminal."""
        old = self.from_version or NO_VERSION
        if not self.changed:
            return f"{self.name}@{self.alias} already is version {self.to_version}: nothing moved"
        return (
            f"{self.name}@{self.alias}: version {old} -> {self.to_version} "
            f"({self.action} by {self.by} at {self.at})"
        )


@dataclass(frozen=True)
class DeletedHolder:
    """The version the last audited move gave an alias to, deleted since (MLflow drops a
    deleted version's aliases, so the alias is unset)."""

    name: str
    alias: str
    version: str
    previous: str  # the holder before it, as that move recorded ("none": unset)
    action: str
    by: str
    at: str
    run_id: str = ""  # the deleted version's source run ("": a move recorded without it)

    def describe(self) -> str:
        """`reco@prod was version 2, which was deleted (last audited move 1 -> 2: ...)`."""
        run = f"; version {self.version} came from run {self.run_id}" if self.run_id else ""
        return (
            f"{self.name}@{self.alias} was version {self.version}, which was deleted (last "
            f"audited move {self.previous} -> {self.version}: {self.action} by {self.by} at "
            f"{self.at}{run})"
        )

    def fixes(self) -> str:
        """The commands that set the alias again."""
        back = (
            f"`replayml rollback {self.name} --alias {self.alias}` (back to version "
            f"{self.previous}) or "
            if self.previous != NO_VERSION
            else ""
        )
        return f"{back}`replayml promote {self.name} VERSION --alias {self.alias}`"


def _last_move(tags: dict[str, str], alias: str) -> dict[str, str] | None:
    """The last audited move of `alias` (None: none recorded, or not readable)."""
    try:
        last = json.loads(tags[_last_move_key(alias)])
    except (KeyError, json.JSONDecodeError):
        return None
    return {str(k): str(v) for k, v in last.items()} if isinstance(last, dict) else None


def _deleted(
    store: RegistryStore, name: str, alias: str, last: dict[str, str]
) -> DeletedHolder | None:
    """The holder `last` (a last-move record) set, if that version is deleted now."""
    version = _norm(last.get("to"))
    if version == NO_VERSION or store.version_exists(name, version):
        return None
    return DeletedHolder(
        name=name,
        alias=alias,
        version=version,
        previous=_norm(last.get("from")),
        action=last.get("action", "?"),
        by=last.get("by", "?"),
        at=last.get("at", "?"),
        run_id=last.get("run_id", ""),
    )


def deleted_holder(store: RegistryStore, name: str, alias: str) -> DeletedHolder | None:
    """Why `alias` of `name` is unset when its holder was deleted (None: the alias is set,
    was never moved by replayml, or was unset some other way)."""
    if store.holder(name, alias) is not None:
        return None
    last = _last_move(store.model_tags(name), alias)
    return None if last is None else _deleted(store, name, alias, last)


def _claim_key(alias: str) -> str:
    return f"{P}alias.{alias}.claim"


def _last_move_key(alias: str) -> str:
    return f"{P}alias.{alias}.last_move"


def _previous_key(alias: str) -> str:
    return f"{P}alias.{alias}.previous"


def _audit_key(alias: str, token: str) -> str:
    return f"{P}alias.{alias}.audit.{int(time.time() * 1000)}.{token[:8]}"


def _norm(version: str | None) -> str:
    return NO_VERSION if version in (None, "", NO_VERSION) else str(version)


def _audit_warnings(store: RegistryStore, name: str, alias: str, holder: str | None) -> list[str]:
    """Check the registered model's audit trail against the alias's actual holder."""
    raw = store.model_tags(name).get(_last_move_key(alias))
    if raw is None:
        if holder is not None:
            return [
                f"{name}@{alias} (version {holder}) has no replayml audit record: it was set "
                f"outside replayml (MLflow UI or API)"
            ]
        return []
    try:
        last = json.loads(raw)
    except json.JSONDecodeError:
        return [f"the audit record {_last_move_key(alias)} of {name} is not valid JSON"]
    if _norm(last.get("to")) != _norm(holder):
        gone = _deleted(store, name, alias, last) if holder is None else None
        if gone is not None:
            return [f"{gone.describe()}; the alias was unset with it"]
        return [
            f"{name}@{alias} is version {_norm(holder)}, but the last audited move "
            f"({last.get('action')} by {last.get('by')} at {last.get('at')}) set it to "
            f"{last.get('to')}: it was moved outside replayml, or a move was interrupted"
        ]
    return []


def check_alias(alias: str) -> None:
    """Refuse an alias name MLflow would refuse, as bad input (checked with MLflow's own rules)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
    )

    try:
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    except MlflowException as exc:
        raise ConfigError(
            f"--alias {alias!r} is not a valid alias: {exc.message} Use letters, digits, '_' "
            f"and '-' (e.g. --alias prod or --alias ab-test), not 'latest' or v<number>"
        ) from None


def _slip(alias: str, known: str) -> bool:
    """Whether `alias` reads as a typing slip of `known`: another case, two neighbours
    swapped, or one letter (not a digit) changed, added or dropped. `ab-2` beside `ab-1`,
    `prod2` beside `prod` (a numbered series) and `prod-us` beside `prod-eu` are no slips."""
    a, b = alias.lower(), known.lower()
    if a == b:
        return True
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 2 and diff[1] == diff[0] + 1:
            return a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        return len(diff) == 1 and not (a[diff[0]].isdigit() and b[diff[0]].isdigit())
    if abs(len(a) - len(b)) != 1:
        return False
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    i = next((i for i in range(len(shorter)) if longer[i] != shorter[i]), len(shorter))
    return longer[:i] + longer[i + 1 :] == shorter and not longer[i].isdigit()


def near_alias(store: RegistryStore, name: str, alias: str) -> str | None:
    """The alias of `name` that `alias` looks like a slip of (`_slip`: `Prod` or `prdo` for
    `prod`), when `alias` is new to the model; None otherwise. Aliases the model had before
    (a deleted holder's, per their audit record) count as existing."""
    if not store.model_exists(name):
        return None
    known = set(store.aliases(name))
    for key in store.model_tags(name):
        if key.startswith(P + "alias.") and key.endswith(".last_move"):
            known.add(key.removeprefix(P + "alias.").removesuffix(".last_move"))
    if alias in known:
        return None
    return next((a for a in sorted(known) if _slip(alias, a)), None)


def check_new_alias(store: RegistryStore, name: str, alias: str) -> None:
    """Refuse a new alias that differs from an existing alias of the model only in case, or
    is a near miss of one (`Prod`, `prdo` for `prod`): consumers of the existing one would
    silently keep the old version. `--new-alias` says a new one is intended."""
    near = near_alias(store, name, alias)
    if near is None:
        return
    holder = store.holder(name, near)
    held = f"held by version {holder}" if holder else "not set now"
    raise ConfigError(
        f"--alias {alias!r} would be a new alias of {name}, close to its existing alias "
        f"{near!r} ({held}): nothing was changed. Use --alias {near}, or pass --new-alias if "
        f"a new alias {alias!r} is intended"
    )


def check_expect(expect: str | None) -> None:
    """Refuse an `--expect-version` that names no version (`v1`, ` 1`, `0`): compared as
    given, it could never match, and would read as a holder someone else moved the alias
    from. A version is a positive integer; `none` means the alias is unset."""
    if expect is None or expect == NO_VERSION or re.fullmatch(r"[1-9][0-9]*", expect):
        return
    raise ConfigError(
        f"--expect-version {expect!r} is not a version: give the number of the version that "
        f"holds the alias now, as `replayml models NAME` lists it (e.g. --expect-version 3), "
        f"or none when the alias is unset; nothing was changed"
    )


def check_ab(ab_label: str | None, ab_group: str | None) -> None:
    """Refuse A/B options that would tag a version ambiguously: a group says which experiment
    the version takes part in, the label which arm it is, and neither means much alone or
    blank."""
    for option, value in (("--ab-label", ab_label), ("--ab-group", ab_group)):
        if value is not None and not value.strip():
            raise ConfigError(f"{option} {value!r} is blank: give a name or leave the option out")
    if ab_group and not ab_label:
        raise ConfigError(
            f"--ab-group {ab_group!r} without --ab-label: say which arm this version is in "
            f"the A/B test (e.g. --ab-label control or --ab-label treatment)"
        )
    if ab_label and not ab_group:
        raise ConfigError(
            f"--ab-label {ab_label!r} without --ab-group: say which A/B test this arm belongs "
            f"to (e.g. --ab-group 2026-12-homepage), so two tests' arms are not mixed up"
        )


def _target_warnings(store: RegistryStore, target: VersionRecord) -> list[str]:
    """What a reviewer should know about the version an alias moves to."""
    out = []
    if not target.tag("run_id"):
        out.append(
            f"version {target.version} was registered outside replayml (no {P}run_id tag): "
            f"its lineage tags are missing; its run {target.run_id} has them"
        )
    if target.tag("forced") == "true":
        out.append(
            f"version {target.version} was registered with --force despite: "
            f"{target.tag('forced_reason') or '(no reason recorded)'}"
        )
    try:
        tags = dict(store.client.get_run(target.run_id).data.tags)
    except Exception:  # a deleted or unreadable source run: the version's own record stands
        tags = dict(target.tags)
    elsewhere = elsewhere_verdict(tags)
    if elsewhere:
        out.append(
            f"the run of version {target.version} was replayed in another environment than "
            f"its own ({elsewhere}) and came out DIFFERENT; "
            + _replay_elsewhere(target.run_id, tags.get(P + "code.commit", ""), elsewhere)
        )
    elif tags.get(P + "replay.verdict") == "DIFFERENT":
        out.append(
            f"the run of version {target.version} was replayed and came out DIFFERENT: see "
            f"`replayml replay {target.run_id}`"
        )
    return out


_KIND_OUTPUT = {
    "lgbm": "probabilities",
    "lgbm_ranker": "ranking scores, not probabilities",
    "popularity": "popularity scores",
}


def _kind_change(kind: str, holder_kind: str, name: str, alias: str, holder: str) -> list[str]:
    """A model of another kind taking over an alias: its callers get other numbers."""
    if not kind or not holder_kind or kind == holder_kind:
        return []
    return [
        f"{name}@{alias} is held by version {holder}, a {holder_kind} model "
        f"({_KIND_OUTPUT.get(holder_kind, holder_kind)}); the new one is a {kind} model "
        f"({_KIND_OUTPUT.get(kind, kind)}): whoever loads {name}@{alias} would get numbers "
        f"on another scale. Use another alias for it, or pass --force if every consumer "
        f"expects the change"
    ]


def version_inputs(store: RegistryStore, v: VersionRecord) -> list[str] | None:
    """The input columns of a version's model: its `replayml.inputs` tag (written at
    register), else its logged model's signature; None when neither can be read."""
    raw = v.tags.get(INPUTS_TAG, "")
    if raw:
        try:
            found = json.loads(raw)
        except json.JSONDecodeError:
            found = None
        if isinstance(found, list):
            return [str(c) for c in found]
    source = v.source or v.tag("model_uri")
    return store.input_columns(source) if source else None


def _input_change(
    store: RegistryStore, name: str, alias: str, target: VersionRecord, holder: str | None
) -> list[str]:
    """A move to a version that reads other input columns than the alias's holder: whoever
    loads NAME@ALIAS must build the new columns (a warning, never a refusal)."""
    if holder is None or holder == target.version:
        return []
    new = version_inputs(store, target)
    old = version_inputs(store, store.version(name, holder))
    if new is None or old is None:
        log.info("input columns of %s v%s or v%s not readable", name, target.version, holder)
        return []
    added = [c for c in new if c not in set(old)]
    removed = [c for c in old if c not in set(new)]
    if not added and not removed:
        return []
    said = [f"added {len(added)}: {', '.join(added)}"] if added else []
    said += [f"removed {len(removed)}: {', '.join(removed)}"] if removed else []
    what = [
        f"consumers of models:/{name}@{alias} must build the added columns (without them, "
        f"predicting fails with 'Model is missing inputs')"
    ] if added else []  # fmt: skip
    what += ["the removed ones are no longer read"] if removed else []
    advice = "; ".join(what)
    return [
        f"the input columns change: version {target.version} reads {len(new)} columns, "
        f"version {holder} (the holder of {name}@{alias} until now) read {len(old)}; "
        + "; ".join(said)
        + f". {advice[0].upper()}{advice[1:]}"
    ]


def _run_tags(store: RegistryStore, run_id: str) -> dict[str, str] | None:
    """The source run's tags, or None when it is gone (deleted or not found)."""
    try:
        run = store.client.get_run(run_id)
    except Exception:
        return None
    return None if run.info.lifecycle_stage == "deleted" else dict(run.data.tags)


def _target_problems(
    store: RegistryStore, name: str, alias: str, target: VersionRecord, holder: str | None
) -> list[str]:
    """Why `target` should not take `alias` (a promote refuses unless forced)."""
    problems = []
    tags = _run_tags(store, target.run_id) if target.run_id else None
    if tags is None:
        problems.append(
            f"the run of version {target.version} ({target.run_id or 'none recorded'}) is "
            f"deleted or not in this store: where the model came from cannot be shown"
        )
    if not target.tag("run_id") and tags is not None and tags.get(P + "replayable") != "true":
        # registered outside replayml (MLflow's own "Register model"): nothing checked its run
        why = tags.get(P + "not_replayable_reasons") or f"no {P}replayable tag"
        problems.append(
            f"version {target.version} was registered outside replayml and its run "
            f"{target.run_id} is not replayable ({why}); register a replayable run with "
            f"`replayml register RUN_ID --name {name}`"
        )
    if holder is not None and holder != target.version:
        kind = target.tag("model.kind") or (tags or {}).get(P + "model.kind", "")
        held = store.version(name, holder)
        held_kind = held.tag("model.kind") or (_run_tags(store, held.run_id) or {}).get(
            P + "model.kind", ""
        )
        problems += _kind_change(kind, held_kind, name, alias, holder)
    return problems


def move_alias(
    store: RegistryStore,
    name: str,
    alias: str,
    version: str,
    *,
    expect: str | None = None,
    action: str = "promote",
    settle: float | None = None,
    force: bool = False,
) -> AliasMove:
    """Move `alias` of `name` to `version` by compare-and-set (see the module docstring).

    `expect` is the version the caller believes holds the alias (`"none"`: unset); None
    expects whatever holder is read first. Raises `AliasConflictError` when another holder
    or a concurrent move is found; before the alias is set nothing has been changed but the
    claim tag.
    """
    check_alias(alias)
    version = str(version)
    target = store.version(name, version)  # the target must exist (clear error otherwise)
    holder = store.holder(name, alias)
    if expect is not None and _norm(expect) != _norm(holder):
        gone = deleted_holder(store, name, alias) if holder is None else None
        if gone is not None:
            raise AliasConflictError(
                f"{gone.describe()}: {name}@{alias} is not set now, not held by the expected "
                f"version {_norm(expect)}. Nothing was changed; set it with --expect-version "
                f"none, or with {gone.fixes()}"
            )
        raise AliasConflictError(
            f"{name}@{alias} is held by version {_norm(holder)}, not the expected version "
            f"{_norm(expect)}: someone moved it meanwhile. Nothing was changed; check "
            f"`replayml models {name}` and retry with --expect-version {_norm(holder)}"
        )
    warnings = _audit_warnings(store, name, alias, holder)
    if action != "register":  # a register has just checked (or forced) its run and said so
        warnings += _target_warnings(store, target)
        problems = _target_problems(store, name, alias, target, holder)
        if problems and action == "promote" and not force:
            raise PromotionRefused(
                f"refusing to move {name}@{alias} to version {version}: "
                + "; ".join(problems)
                + ". Nothing was changed; pass --force to move it anyway"
            )
        warnings += problems  # a rollback restores what served before: never blocked
    warnings += _input_change(store, name, alias, target, holder)
    user, when = _user(), _now()
    token = uuid.uuid4().hex
    if holder == version:
        return AliasMove(name, alias, holder, version, action, user, when, token, tuple(warnings))
    claim = {
        "token": token,
        "action": action,
        "from": _norm(holder),
        "to": version,
        "run_id": target.run_id,  # the version may be deleted later: its run stays traceable
        "by": user,
        "at": when,
    }
    start = time.perf_counter()
    store.set_model_tag(name, _claim_key(alias), json.dumps(claim))
    rtt = time.perf_counter() - start
    # long enough that a competitor's claim written in the same window is visible to us
    time.sleep(settle if settle is not None else min(2.0, max(0.25, 4 * rtt)))
    tags = store.model_tags(name)
    try:
        current = json.loads(tags.get(_claim_key(alias), "{}"))
    except json.JSONDecodeError:
        current = {}
    if current.get("token") != token:
        raise AliasConflictError(
            f"concurrent move of {name}@{alias}: {current.get('by', '?')} is moving it to "
            f"version {current.get('to', '?')} ({current.get('action', '?')} started at "
            f"{current.get('at', '?')}). This move to version {version} was abandoned before "
            f"touching the alias; check `replayml models {name}` and retry if still needed"
        )
    now_holder = store.holder(name, alias)
    if _norm(now_holder) != _norm(holder):
        raise AliasConflictError(
            f"{name}@{alias} moved from version {_norm(holder)} to {_norm(now_holder)} while "
            f"this move to version {version} was starting; nothing was changed. Check "
            f"`replayml models {name}` and retry with --expect-version {_norm(now_holder)}"
        )
    store.set_alias(name, alias, version)
    line = f"{action} {name}@{alias}: {_norm(holder)} -> {version} by {user} at {when}"
    if target.run_id:
        line += f" (version {version}: run {target.run_id})"
    new_tags = {_audit_key(alias, token): line}
    if action != "rollback":  # a rollback keeps the chain, so rolling back again goes further
        new_tags[_previous_key(alias)] = _norm(holder)
    store.set_version_tags(name, version, new_tags)
    if holder is not None:
        store.set_version_tags(name, holder, {_audit_key(alias, token): line})
    store.set_model_tag(name, _last_move_key(alias), json.dumps(claim))
    final = store.holder(name, alias)
    if _norm(final) != version:
        raise AliasConflictError(
            f"{name}@{alias} was set to version {version} and then overwritten with version "
            f"{_norm(final)} by a concurrent move (see the audit tags "
            f"{P}alias.{alias}.audit.* on both versions); check `replayml models {name}`"
        )
    after = store.model_tags(name)
    try:
        claimed_after = json.loads(after.get(_claim_key(alias), "{}")).get("token")
    except json.JSONDecodeError:
        claimed_after = None
    if claimed_after != token:
        # someone claimed after our check: they should stop on seeing our version; give them
        # the time to (not) overwrite it, and say so if they did
        time.sleep(settle if settle is not None else min(2.0, max(0.25, 4 * rtt)))
        final = store.holder(name, alias)
        if _norm(final) != version:
            raise AliasConflictError(
                f"{name}@{alias} was set to version {version} and then overwritten with "
                f"version {_norm(final)} by a concurrent move (see the audit tags "
                f"{P}alias.{alias}.audit.* on both versions); check `replayml models {name}`"
            )
        warnings.append(
            f"another move of {name}@{alias} was claimed right after this one and stopped "
            f"(check `replayml models {name}`)"
        )
    return AliasMove(name, alias, holder, version, action, user, when, token, tuple(warnings))


def promote(
    name: str,
    version: str,
    alias: str,
    *,
    spec: StoreSpec,
    expect: str | None = None,
    force: bool = False,
    ab_label: str | None = None,
    ab_group: str | None = None,
    new_alias: bool = False,
) -> AliasMove:
    """Move `alias` to `version` (compare-and-set against `expect` when given).

    Refuses (`PromotionRefused`, unless `force`) a version registered outside replayml whose
    run is not replayable, a version whose run is gone, and a model of another kind than the
    alias's holder (its callers would get numbers on another scale). With `ab_label` and
    `ab_group` (both or neither), the version's A/B label and group are set once the alias has
    moved, with an audit tag on the version. A new alias that looks like a slip of an
    existing one (`Prod`, `prdo` for `prod`) is refused (`ConfigError`) unless `new_alias`.
    """
    check_alias(alias)
    check_expect(expect)
    check_ab(ab_label, ab_group)  # before anything is changed
    store = RegistryStore(spec)
    if not new_alias:
        check_new_alias(store, name, alias)
    move = move_alias(store, name, alias, version, expect=expect, action="promote", force=force)
    if ab_label and ab_group:
        move = replace(move, ab_change=set_ab(store, move, ab_label, ab_group))
    return move


def set_ab(store: RegistryStore, move: AliasMove, ab_label: str, ab_group: str) -> str:
    """Set the A/B label and group of the version `move` moved its alias to, with an audit tag
    (`replayml.ab.audit.*`); returns the line that says what changed."""
    v = store.version(move.name, move.to_version)
    old = f"{v.tag('ab_label') or '-'} ({v.tag('ab_group') or '-'})"
    new = f"{ab_label} ({ab_group})"
    if old == new:
        return f"{move.name} version {move.to_version} already is A/B {new}"
    line = (
        f"{move.action} {move.name}@{move.alias} set A/B of version {move.to_version}: "
        f"{old} -> {new} by {move.by} at {move.at}"
    )
    store.set_version_tags(
        move.name,
        move.to_version,
        {
            P + "ab_label": ab_label,
            P + "ab_group": ab_group,
            f"{P}ab.audit.{int(time.time() * 1000)}.{move.token[:8]}": line,
        },
    )
    return f"{move.name} version {move.to_version}: A/B {old} -> {new}"


def rollback(name: str, alias: str, *, spec: StoreSpec, expect: str | None = None) -> AliasMove:
    """Move `alias` back to the version that held it before its current holder (or, when
    that holder was deleted, to the one before it)."""
    check_alias(alias)
    check_expect(expect)
    store = RegistryStore(spec)
    holder = store.holder(name, alias)
    gone = deleted_holder(store, name, alias) if holder is None else None
    if gone is not None:
        return _rollback_deleted(store, gone, expect)
    if holder is None:
        near = near_alias(store, name, alias)
        hint = f" Did you mean --alias {near}?" if near else ""
        raise ModelNotFoundError(
            f"{name}@{alias} is not set: there is nothing to roll back.{hint} Set it with "
            f"`replayml promote {name} VERSION --alias {alias}`"
        )
    if expect is not None and _norm(expect) != holder:
        raise AliasConflictError(
            f"{name}@{alias} is held by version {holder}, not the expected version "
            f"{_norm(expect)}: nothing was changed; check `replayml models {name}`"
        )
    previous = store.version(name, holder).tags.get(_previous_key(alias), NO_VERSION)
    if previous == NO_VERSION:
        raise AliasConflictError(
            f"{name}@{alias} (version {holder}) has no recorded previous holder "
            f"({_previous_key(alias)}): it was the first, or was set outside replayml. Move it "
            f"explicitly with `replayml promote {name} VERSION --alias {alias}`"
        )
    return move_alias(store, name, alias, previous, expect=holder, action="rollback")


def _rollback_deleted(store: RegistryStore, gone: DeletedHolder, expect: str | None) -> AliasMove:
    """Give the alias back to the holder before its deleted one (the last audited move's
    `from`), if that version still exists."""
    name, alias = gone.name, gone.alias
    if expect is not None and _norm(expect) != NO_VERSION:
        raise AliasConflictError(
            f"{gone.describe()}: {name}@{alias} is not set now, not held by the expected "
            f"version {_norm(expect)}. Nothing was changed; roll back with --expect-version "
            f"none, or without it"
        )
    if gone.previous == NO_VERSION:
        raise AliasConflictError(
            f"{gone.describe()}: that move found @{alias} unset, so no earlier holder is "
            f"recorded to roll back to. Set it with `replayml promote {name} VERSION --alias "
            f"{alias}`"
        )
    if not store.version_exists(name, gone.previous):
        raise AliasConflictError(
            f"{gone.describe()}, and the holder before it, version {gone.previous}, was "
            f"deleted too: there is nothing to roll back to. Set it with `replayml promote "
            f"{name} VERSION --alias {alias}`"
        )
    return move_alias(store, name, alias, gone.previous, expect=NO_VERSION, action="rollback")


# ------------------------------------------------------------------------------ listing


@dataclass(frozen=True)
class ModelRow:
    """One line of `replayml models NAME`."""

    version: str
    registered_at: str
    aliases: tuple[str, ...]
    ab_label: str
    ab_group: str
    run_id: str
    run_url: str
    metrics: dict[str, float] = field(default_factory=dict)
    replay_verdict: str = ""
    forced: bool = False
    version_url: str = ""
    overrides: tuple[str, ...] | None = None  # None: not recorded
    sweep: dict[str, str] = field(default_factory=dict)  # `replayml.sweep*` tags, unprefixed
    #: the version's `replayml.*` lineage tags (data, code, dates), unprefixed
    lineage: dict[str, str] = field(default_factory=dict)

    def lineage_lines(self) -> list[str]:
        """What the model was built from: data version, code, and the windows it was
        trained and tested on (its key metrics are on that test window)."""
        got = self.lineage.get
        lines = []
        if got("data.dvc_hash"):
            dataset = f"{got('dataset')} " if got("dataset") else ""
            lines.append(f"data {dataset}{got('data.dvc_hash', '')[:12]}")
        if got("code.commit"):
            dirty = " + uncommitted diff" if got("code.dirty") == "true" else ""
            lines.append(f"code {got('code.commit', '')[:12]}{dirty}")
        for name, start, end in (
            ("train", "dates.train_start", "dates.train_end"),
            ("valid", "dates.valid_start", "dates.valid_end"),
            ("test", "dates.test_start", "dates.test_end"),
        ):
            if got(start) and got(end):
                lines.append(f"{name} {got(start)}..{got(end)}")
        return lines

    def metrics_text(self) -> str:
        return " ".join(f"{short_metric(k)}={v:.4f}" for k, v in self.metrics.items())

    def origin_lines(self) -> list[str]:
        """Where the model came from: its sweep (and whether it was the best child, by which
        objective) and the overrides it was trained with."""
        lines = []
        if self.sweep.get("sweep_id"):
            objective = self.sweep.get("sweep.objective", "")
            direction = self.sweep.get("sweep.objective_direction", "")
            by = f" by {objective}" + (f" ({direction})" if direction else "") if objective else ""
            best = self.sweep.get("sweep.best", "unknown")
            said = {"true": f"best child{by}", "false": f"not its best child{by}"}.get(
                best, "no best child recorded"
            )
            if self.sweep.get("sweep.complete") == "false" and best in ("true", "false"):
                said += ", of the jobs that finished (some failed, were stopped or never ran)"
            lines.append(f"sweep {self.sweep['sweep_id']}: {said}")
        if self.overrides is not None:
            lines.append("overrides: " + (" ".join(self.overrides) or "none"))
        return lines


def _row(v: VersionRecord) -> ModelRow:
    metrics = {}
    for key, value in sorted(v.tags.items()):
        if key.startswith(P + "metric."):
            try:
                metrics[key.removeprefix(P + "metric.")] = float(value)
            except ValueError:
                continue
    at = v.tag("registered_at")
    if not at and v.created_ms:
        at = datetime.fromtimestamp(v.created_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ModelRow(
        version=v.version,
        registered_at=at,
        aliases=v.aliases,
        ab_label=v.tag("ab_label"),
        ab_group=v.tag("ab_group"),
        run_id=v.run_id or v.tag("run_id"),
        run_url=v.tag("run_url"),
        metrics=metrics,
        replay_verdict=v.tag("replay.verdict"),
        forced=v.tag("forced") == "true",
        overrides=_overrides(v.tags.get(P + "overrides")),
        sweep={
            k.removeprefix(P): value
            for k, value in v.tags.items()
            if k == P + "sweep_id" or k.startswith(P + "sweep.")
        },
        lineage={
            k.removeprefix(P): value
            for k, value in v.tags.items()
            if k.removeprefix(P).startswith(("data.", "code.", "dates.", "dataset"))
        },
    )


def _overrides(raw: str | None) -> tuple[str, ...] | None:
    """The overrides a run recorded (a JSON list), or None when not recorded."""
    if raw is None:
        return None
    try:
        found = json.loads(raw)
    except json.JSONDecodeError:
        return (raw,)
    return tuple(str(o) for o in found) if isinstance(found, list) else (raw,)


def model_rows(name: str, *, spec: StoreSpec) -> list[ModelRow]:
    """The versions of `name`, newest first.

    The replay verdict and the run link are read from the source run as it is now (a replay
    after registration counts; links use this store's UI address), else from the version.
    """
    from replayml.tracking.store import run_url

    store = RegistryStore(spec)
    rows = [_row(v) for v in store.versions(name)]
    client = store.client
    parents: dict[str, dict[str, str] | None] = {}
    for i, row in enumerate(rows):
        rows[i] = row = replace(row, version_url=model_version_url(spec, name, row.version))
        try:
            run = client.get_run(row.run_id) if row.run_id else None
        except Exception:  # a deleted or unreadable run: keep what the version recorded
            log.debug("source run %s of %s is not readable", row.run_id, name)
            continue
        if run is None:
            continue
        ui = run.data.params.get("tracking.ui_url")
        tags = dict(run.data.tags)
        rows[i] = replace(
            row,
            run_url=run_url(spec, run.info.experiment_id, row.run_id, ui),
            version_url=model_version_url(spec, name, row.version, ui),
            replay_verdict=tags.get(P + "replay.verdict") or row.replay_verdict,
        )
        # a version registered before its origin was copied: read it from the run
        if row.overrides is None and P + "overrides" in tags:
            rows[i] = replace(rows[i], overrides=_overrides(tags[P + "overrides"]))
        if not row.sweep and tags.get(P + "sweep_id"):
            parent = tags.get("mlflow.parentRunId", "")
            if parent not in parents:
                parents[parent] = _parent_tags(client, tags)
            found = sweep_tags(row.run_id, tags, parents[parent])
            rows[i] = replace(rows[i], sweep={k.removeprefix(P): v for k, v in found.items()})
    return rows


HEADERS = (
    "version",
    "registered at",
    "aliases",
    "A/B label",
    "A/B group",
    "source run",
    "key metrics",
    "replay",
    "origin",
    "lineage",
    "version page",
)


def _cells(r: ModelRow) -> list[str]:
    version = r.version + (" (forced)" if r.forced else "")
    return [
        version,
        r.registered_at,
        ", ".join(r.aliases),
        r.ab_label,
        r.ab_group,
        r.run_url or r.run_id,
        r.metrics_text(),
        r.replay_verdict,
        "; ".join(r.origin_lines()),
        "; ".join(r.lineage_lines()),
        r.version_url,
    ]


def models_markdown(name: str, rows: list[ModelRow]) -> str:
    """The versions as a Markdown table."""
    lines = [
        f"## {name}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(lines) + "\n"


def models_rich(name: str, rows: list[ModelRow]) -> object:
    """The versions as a Rich table (for a terminal): versions and short run ids that link to
    their pages in the UI."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=name, show_lines=True)
    widths = {"aliases": 6, "A/B label": 9, "A/B group": 9, "key metrics": 15, "replay": 9,
              "origin": 24}  # fmt: skip
    for h in HEADERS[:-1]:  # the version links to its page
        table.add_column(
            h, no_wrap=h in ("version", "source run"), min_width=widths.get(h), overflow="fold"
        )
    for r in rows:
        cells: list[object] = _cells(r)[:-1]
        cells[0] = Text(str(cells[0]), style=f"link {r.version_url}" if r.version_url else "")
        cells[1] = r.registered_at.replace("T", " ")[:16]
        url = r.run_url
        cells[5] = Text(r.run_id[:8], style=f"link {url}" if url else "")
        cells[6] = "\n".join(f"{short_metric(k)} {v:.4f}" for k, v in r.metrics.items())
        cells[8] = "\n".join(r.origin_lines())
        cells[9] = "\n".join(r.lineage_lines())
        table.add_row(*cells)
    return table


# ------------------------------------------------------------------------------ lookups


def resolve_model_uri(uri: str, *, spec: StoreSpec) -> VersionRecord:
    """The version a `models:/NAME@alias` or `models:/NAME/VERSION` URI points at."""
    body = uri.removeprefix("models:/")
    store = RegistryStore(spec)
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        aliases = store.aliases(name)
        gone = deleted_holder(store, name, alias) if alias not in aliases else None
        if gone is not None:
            raise ModelNotFoundError(
                f"{uri}: {gone.describe()}; no version of {name!r} holds alias {alias!r} now "
                f"({aliases_text(name, aliases, yet=False)}). Use models:/{name}/VERSION, or "
                f"set the alias again with {gone.fixes()}"
            )
        if alias not in aliases:
            raise ModelNotFoundError(
                f"{uri}: no version of {name!r} holds alias {alias!r} in {spec.display_uri} "
                f"({aliases_text(name, aliases)}); use one of those, or set it with "
                f"`replayml promote {name} VERSION --alias {alias}`"
            )
        return store.version(name, aliases[alias])
    name, _, version = body.rpartition("/")
    if not name or not version.isdigit():
        raise ReplaymlError(
            f"{uri!r} is not a registry URI: use models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    return store.version(name, version)


def aliases_text(name: str, aliases: dict[str, str], *, yet: bool = True) -> str:
    """`the aliases of reco: ab -> v3, prod -> v2` (or that it has none; `yet=False` when
    one was there before)."""
    if not aliases:
        return f"{name} has no aliases" + (" yet" if yet else "")
    held = ", ".join(f"@{a} -> v{v}" for a, v in sorted(aliases.items()))
    return f"the aliases of {name}: {held}"


@dataclass(frozen=True)
class RunRef:
    """A run given by its id or by a registered version (`models:/NAME@ALIAS|/VERSION`)."""

    run_id: str
    given: str
    version: VersionRecord | None = None

    def describe(self) -> str:
        """`models:/reco@prod = reco version 3 (run <id>)`; the bare id for a run id."""
        if self.version is None:
            return self.run_id
        v = self.version
        return f"{self.given} = {v.name} version {v.version} (run {self.run_id})"


def resolve_run_ref(ref: str, *, spec: StoreSpec, option: str = "RUN_ID") -> RunRef:
    """The run `ref` names: a 32-hex MLflow run id as is, or the source run of the version a
    `models:/NAME@ALIAS` or `models:/NAME/VERSION` URI points at.

    Anything else is refused (`ConfigError`) before the store is asked, naming `option`, the
    value and the forms accepted.
    """
    given = ref.strip()
    if given.startswith("models:/"):
        version = resolve_model_uri(given, spec=spec)
        if not version.run_id:
            raise ReplaymlError(
                f"{option} {given}: {version.name} version {version.version} records no source "
                f"run (it was created from a model outside any run), so there is no run to use; "
                f"give a run id instead"
            )
        return RunRef(version.run_id, given, version)
    if not RUN_ID.fullmatch(given):
        raise ConfigError(
            f"{option} {ref!r} is not a run id: give the run's MLflow id (32 hex digits, the "
            f"end of its link, as printed by train.py), or a registered model version as "
            f"models:/NAME@ALIAS or models:/NAME/VERSION (tracking store: {spec.display_uri})"
        )
    return RunRef(given, given)
