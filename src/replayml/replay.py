"""Replay a recorded run exactly and judge the result: `replay(run_id) -> ReplayReport`.

The current checkout is never touched. The run's commit is checked out in a temporary git
worktree (its recorded uncommitted diff applied), the run's data version is materialised there
from the project's DVC cache (or the remote) and re-hashed, and the OLD code trains from the
run's recorded config (`replayml/config.yaml`, absolute dates) in a subprocess, logging a new
run tagged `replayml.replay_of`. Slice hashes, tree and prediction hashes and every metric are
then compared exactly, and both runs are tagged with the verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from replayml.errors import DataVersionError, ReplaymlError, TrackingError
from replayml.prestart import PrestartedPython
from replayml.progress import Steps
from replayml.redact import FINGERPRINT_TAG, PLACEHOLDER, redact_text
from replayml.tracking.read import CONFIG_ARTIFACT, DIFF_ARTIFACT

if TYPE_CHECKING:
    from rich.console import Console

    from replayml.tracking.read import RecordedRun, RunReader
    from replayml.tracking.store import StoreSpec

log = logging.getLogger(__name__)

OVERRIDES_ARTIFACT = "replayml/overrides.yaml"
SECRET_ENV_PREFIX = "REPLAYML_SECRET_"
REPLAY_OF = "replayml.replay_of"
REPLAY_ATTEMPT = "replayml.replay_attempt"  # finds the new run (not secret-like)
REPLAY_NAME_PREFIX = "replay of "
MAX_RUN_NAME = 250  # what MLflow stores of a run name
# A copy, never a link: the worktree's data can then never alias (and damage) the user's cache.
WORKTREE_CACHE_TYPE = "reflink,copy"
SPLITS = ("train", "valid", "test")
_LEAKY_ENV = (
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_",
    "REPLAYML_PARENT_",
    "REPLAYML_SWEEP_",
    "REPLAYML_PARALLEL_",
)  # a sweep's or a run's context, never the replay's
GROUPS = ("data", "code", "config", "environment", "model", "metrics")
_DATA_CONFIG = ("data", "dates", "preprocessing", "features")  # what shapes the matrices


class Verdict(StrEnum):
    """The outcome of a replay."""

    IDENTICAL = "IDENTICAL"
    DIFFERENT = "DIFFERENT"
    NOT_REPLAYABLE = "NOT_REPLAYABLE"


@dataclass(frozen=True)
class Difference:
    """One thing that differs between the run and its replay.

    `outcome` differences (data read, model, metrics) decide the verdict; the others (code,
    config, environment) are context that may explain them.
    """

    group: str
    key: str
    original: str
    replay: str
    delta: str = ""
    cause: str = ""
    outcome: bool = True


@dataclass
class ReplayReport:
    """What a replay did and found."""

    verdict: Verdict
    original_run_id: str
    original_url: str
    tracking_uri: str
    commit: str = ""
    replay_run_id: str | None = None
    replay_url: str | None = None
    differences: list[Difference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_replayable: list[str] = field(default_factory=list)
    worktree: Path | None = None  # with --keep: the project's folder in the kept worktree
    kept_dir: Path | None = None  # with --keep: the temporary folder holding all of it
    git_root: Path | None = None
    environment: str = ""  # SAME_ENVIRONMENT, or the environment keys that differed
    kept_verdict: str = ""  # the original's earlier verdict, kept over this one (see _replay)

    @property
    def cleanup_command(self) -> str:
        """The shell command removing what --keep left: the temporary folder (worktree, replay
        config, outputs) and git's record of the worktree."""
        if self.kept_dir is None:
            return ""
        git = f"git -C {shlex.quote(str(self.git_root))}" if self.git_root else "git"
        tree = shlex.quote(str(self.kept_dir / "worktree"))
        return f"{git} worktree remove --force {tree}; rm -rf {shlex.quote(str(self.kept_dir))}"

    @property
    def exit_code(self) -> int:
        """0 IDENTICAL, 1 DIFFERENT, 2 else (NOT_REPLAYABLE, --strict-env refusals included)."""
        return {Verdict.IDENTICAL: 0, Verdict.DIFFERENT: 1}.get(self.verdict, 2)


# --------------------------------------------------------------------------------- helpers


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, check=False, env=env or dict(os.environ)
    )


def _git(cwd: Path, *args: str) -> str:
    proc = _run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd)
    if proc.returncode != 0:
        raise ReplaymlError(f"`git {' '.join(args)}` failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def _dvc_pull(worktree: Path, dvc_file: str) -> str | None:
    """`dvc pull DVC_FILE` in the worktree, in this process; the error text, or None."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    quiet = logging.getLogger("dvc")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # like `dvc pull -q`: failures come back as the exception
    try:
        with Repo(str(worktree)) as repo:
            repo.pull(targets=[str(worktree / dvc_file)])
    except DvcException as exc:
        causes = [str(exc)]
        while exc.__cause__ is not None and len(causes) < 4:
            exc = exc.__cause__  # type: ignore[assignment]
            causes.append(str(exc))
        return "\n".join(c for c in causes if c)
    finally:
        quiet.setLevel(level)
    return None


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def secret_env_var(key: str) -> str:
    """The environment variable a replay reads a redacted config value from."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Z0-9]+", "_", key.upper()).strip("_")


# ---------------------------------------------------------------------------------- config


def replay_config(
    recorded: dict[str, Any],
    run_id: str,
    token: str,
    experiment: str,
    fingerprints: dict[str, str] | None = None,
    run_name: str = "",
) -> tuple[dict[str, Any], set[str], list[str]]:
    """The config file a replay trains from: the recorded config, with

    - each redacted value replaced by `${oc.env:REPLAYML_SECRET_<KEY>}` (so the secret is read
      from the environment and redacted again in the replay's own records),
    - tracking pointed at the replay's store (`tracking.uri: null` + $MLFLOW_TRACKING_URI) and
      the original run's experiment, and `output_dir: null` (the replay's own temporary folder,
      never the original run's outputs),
    - `features_dir: null`: a run that read cached matrices (the DVC `features` stage's
      output) is replayed by building them from the data; their slice hashes are compared,
      so a rebuilt matrix that differs from the cached one shows,
    - the `replayml.replay_of` / `replayml.replay_attempt` tags added, and the replay named
      `replay of <run_name>` (the original's MLflow name) when the run's code knows
      `tracking.run_name`, so the UI's run list tells replays apart.

    A value given in the environment for a key with a recorded fingerprint (`fingerprints`,
    from the run's `replayml.redacted_hash.*` tags) must match it.

    Returns (config, dotted keys changed for the replay, reasons it cannot be replayed).
    """
    from replayml.redact import matches_fingerprint

    missing: list[str] = []
    changed: set[str] = set()

    def fill(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            return {k: fill(v, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v, f"{key}.{i}") for i, v in enumerate(node)]
        if isinstance(node, str):
            if PLACEHOLDER in node:
                var = secret_env_var(key)
                if var not in os.environ and key.startswith(("tags.", "tracking.")):
                    # a free-form run tag or a tracking setting (a UI address) cannot change
                    # the model: replay with it redacted
                    changed.add(key)
                    return node.replace("${", "\\${")
                if var not in os.environ:
                    missing.append(
                        f"{key} was redacted in the run's record; set the secret in the "
                        f"environment as {var} to replay it"
                    )
                elif key in (fingerprints or {}) and not matches_fingerprint(
                    os.environ[var], (fingerprints or {})[key]
                ):
                    missing.append(
                        f"{var} is not the value {key} had when the run trained (its salted "
                        f"hash, tag {FINGERPRINT_TAG}{key}, differs): set the run's value"
                    )
                return "${oc.env:" + var + "}"
            return node.replace("${", "\\${")  # recorded values are resolved: keep them literal
        return node

    tracking = dict(recorded.get("tracking") or {})
    if tracking.get("uri") is not None:
        changed.add("tracking.uri")
    if tracking.get("experiment") != experiment:
        changed.add("tracking.experiment")
    body = {k: v for k, v in recorded.items() if k != "tracking"}
    config = fill(body, "")
    config["tracking"] = {
        **fill({k: v for k, v in tracking.items() if k not in ("uri", "experiment")}, "tracking"),
        "uri": None,
        "experiment": experiment,
    }
    # the replay's own folders: never the run's outputs, and matrices rebuilt from the data
    # (their slice hashes are compared) instead of read from a cache the worktree lacks
    for key in ("output_dir", "features_dir"):
        if config.get(key) is not None:
            config[key] = None
            changed.add(key)
    if run_name and "run_name" in tracking:  # older code has no such key: left unnamed
        name = f"{REPLAY_NAME_PREFIX}{run_name}"[:MAX_RUN_NAME]
        config["tracking"]["run_name"] = name.replace("${", "\\${")
        changed.add("tracking.run_name")
    config["tags"] = {**(config.get("tags") or {}), REPLAY_OF: run_id, REPLAY_ATTEMPT: token}
    changed |= {f"tags.{REPLAY_OF}", f"tags.{REPLAY_ATTEMPT}"}
    return config, changed, missing


# The recomposition check runs with the run's own code (PYTHONPATH=<worktree>/src).
_RECOMPOSE = """
import json, sys
from pathlib import Path
from omegaconf import OmegaConf
try:
    from hydra import compose, initialize_config_dir
    from replayml.config.resolve import (
        config_to_container, resolve_dates, to_run_config, with_absolute_dates)
    from replayml.config.schema import register_configs
    from replayml.data.load import date_range
    from replayml.redact import env_interpolated_keys, redact_tree
    overrides, config_dir, config_name, extra = json.loads(sys.argv[1])
    if extra:  # the run's other config dirs (`--config-dir`)
        overrides = [*overrides, "hydra.searchpath=" + json.dumps(["file://" + d for d in extra])]
    register_configs()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        node = compose(config_name=config_name, overrides=overrides)
    raw = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
    raw.pop("hydra", None)
    # values Hydra sets as the run starts (`${hydra:runtime.output_dir}`): no composition
    # outside that run knows them, so they are left out of the comparison
    runtime = []
    def clear(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict):
                clear(v, f"{prefix}{k}.")
            elif isinstance(v, str) and "${hydra:" in v:
                tree[k] = "(set by Hydra as the run started)"
                runtime.append(f"{prefix}{k}")
    clear(raw)
    env_keys = env_interpolated_keys(OmegaConf.create(raw))
    try:
        cfg = to_run_config(raw)
    except Exception:
        if not runtime:
            raise
        raise RuntimeError(
            ", ".join(runtime) + " took a value from Hydra's runtime (`${hydra:...}`), which "
            "only the run itself knew") from None
    windows = resolve_dates(cfg.dates, *date_range(cfg.data, Path.cwd()))
    tree = redact_tree(config_to_container(with_absolute_dates(cfg, windows)), set(env_keys))
    print(json.dumps({"config": tree, "runtime": runtime}))
except Exception as exc:
    said = " ".join(str(exc).split("Config search path")[0].split())
    print("error: " + (said[:400] or type(exc).__name__), file=sys.stderr)
    raise SystemExit(1)
"""


def _config_differences(
    original: dict[str, Any], other: dict[str, Any], ignore: set[str]
) -> list[tuple[str, str, str]]:
    from replayml.pipeline import flatten

    a, b = flatten(original), flatten(other)
    keys = sorted((set(a) | set(b)) - ignore)
    return [(k, a.get(k, "(absent)"), b.get(k, "(absent)")) for k in keys if a.get(k) != b.get(k)]


# ----------------------------------------------------------------------------- environment


THREADS = "env.thread_env"


def environment_differences(run: RecordedRun, project: Path, strict: bool) -> list[Difference]:
    """Recorded environment vs the one the replay will run in (this interpreter, uv.lock)."""
    from replayml.lineage.environment import TRACKED_PACKAGES, current_environment

    env = current_environment(project)
    model_threads = run.tag("env.num_threads")
    rows: list[tuple[str, str, str, str]] = [
        (
            "env.lock_hash",
            run.tag("env.lock_hash"),
            env.lock_hash,
            "uv.lock differs from the run's; `uv sync --frozen` at the run's commit installs "
            "its versions",
        ),
        ("env.python", run.tag("env.python"), env.python, "another Python version"),
        ("env.platform", run.tag("env.platform"), env.platform, "another OS or kernel"),
        ("env.machine", run.tag("env.machine"), env.machine, "another CPU architecture"),
        (
            "env.cpu",
            run.tag("env.cpu"),
            env.cpu,
            "another CPU model or vector instruction set: floating-point sums may run in "
            "another order, which can move metrics (and a close split, hence trees) in their "
            "last digits",
        ),
        (
            "env.cpu_count",
            run.tag("env.cpu_count"),
            str(env.cpu_count),
            f"another core count (model.num_threads={model_threads} is pinned by the config)",
        ),
        (
            THREADS,
            run.tag("env.thread_env"),
            json.dumps(env.thread_env, sort_keys=True),
            f"thread variables differ; LightGBM's threads are pinned by "
            f"model.num_threads={model_threads}",
        ),
    ]
    for pkg in TRACKED_PACKAGES:
        rows.append(
            (f"env.{pkg}", run.tag(f"env.{pkg}"), env.packages[pkg], f"another {pkg} version")
        )
    # thread variables cannot change the result: LightGBM's threads are pinned by the config
    out = [
        Difference("environment", key, old, new, cause=cause, outcome=strict and key != THREADS)
        for key, old, new, cause in rows
        if old and old != new
    ]
    if model_threads.isdigit() and int(model_threads) > env.cpu_count:
        out.append(
            Difference(
                "environment",
                "model.num_threads",
                model_threads,
                f"{env.cpu_count} cores",
                cause="more LightGBM threads than cores: validation metrics may vary",
                outcome=strict,
            )
        )
    return out


SAME_ENVIRONMENT = "same"
ENVIRONMENT_TAG = "replayml.replay.environment"
# cannot change a result: LightGBM's threads are pinned by the config
_NO_EFFECT = (THREADS, "env.cpu_count")


def replay_environment(env_diffs: list[Difference]) -> str:
    """Whether a replay ran in the run's own environment: `same`, or the keys that differed
    with both values (`env.lightgbm 4.7.0 -> 4.3.0, ...`), what `replayml.replay.environment`
    records on both runs."""
    rows = [
        f"{d.key} {_short(d.original, 14)} -> {_short(d.replay, 14)}"
        for d in env_diffs
        if d.key not in _NO_EFFECT
    ]
    return ", ".join(rows)[:1000] or SAME_ENVIRONMENT


# ------------------------------------------------------------------------------------ code


_WORKTREE_PREFIX = "replayml-replay-"
_OWNER = "replayml replay"


def _owner_reason() -> str:
    """Who owns a replay's worktree: `replayml replay pid=… started=… pstart=… host=…
    space=…` (`pstart`: the process's start on the kernel's clock, which tells a reused pid)."""
    from replayml.tracking.run import pid_space, process_start

    pstart = process_start()
    return (
        f"{_OWNER} pid={os.getpid()} started={time.time():.0f} "
        + (f"pstart={pstart:.2f} " if pstart is not None else "")
        + f"host={socket.gethostname()} space={pid_space()}"
    )


def remove_abandoned_worktrees(git_root: Path) -> None:
    """Remove the worktrees (and temporary folders) of replays on this host whose process is
    gone: a replay killed by SIGKILL cannot remove its own."""
    from replayml.tracking.doctor import process_alive
    from replayml.tracking.run import pid_space

    listing = _run(["git", "worktree", "list", "--porcelain"], git_root)
    if listing.returncode != 0:
        return
    for block in listing.stdout.split("\n\n"):
        lines = block.splitlines()
        path = next((Path(ln[9:]) for ln in lines if ln.startswith("worktree ")), None)
        reason = next((ln[7:] for ln in lines if ln.startswith(f"locked {_OWNER} ")), None)
        if path is None or reason is None or not path.parent.name.startswith(_WORKTREE_PREFIX):
            continue
        owner = dict(f.split("=", 1) for f in reason[len(_OWNER) :].split() if "=" in f)
        if owner.get("host") != socket.gethostname() or owner.get("space") != pid_space():
            continue  # another machine's (a shared file system): its pid means nothing here
        try:
            pid, started = int(owner["pid"]), float(owner["started"])
            pstart = float(owner["pstart"]) if "pstart" in owner else None
        except (KeyError, ValueError):
            continue
        if process_alive(pid, since=started, started=pstart):
            continue
        _forget_worktree(git_root, path)
        shutil.rmtree(path.parent, ignore_errors=True)
        log.info("removed the worktree of a replay that was killed (pid %s): %s", pid, path)


def _forget_worktree(git_root: Path, path: Path) -> None:
    """Remove worktree `path` and git's record of it, and nothing else: `git worktree prune`
    would also drop the user's own worktrees that sit on an unmounted or moved path."""
    removed = _run(["git", "worktree", "remove", "-f", "-f", str(path)], git_root)
    if removed.returncode == 0:
        return
    common = _run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], git_root)
    admin = Path(common.stdout.strip()) / "worktrees"
    for gitdir in admin.glob("*/gitdir") if common.returncode == 0 else []:
        try:
            ours = Path(gitdir.read_text().strip()).parent == path
        except OSError:
            continue
        if ours:
            shutil.rmtree(gitdir.parent, ignore_errors=True)
            return
    log.warning("git worktree remove failed: %s", removed.stderr.strip())


@contextmanager
def _worktree(git_root: Path, commit: str, keep: bool) -> Iterator[Path]:
    """A detached worktree of `commit` in a new temporary folder (removed unless `keep`)."""
    remove_abandoned_worktrees(git_root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_WORKTREE_PREFIX}{commit[:8]}-"))
    path = tmp / "worktree"
    # locked with its owner, so that a later replay can remove it if this process is killed
    lock = [] if keep else ["--lock", "--reason", _owner_reason()]
    try:
        _git(git_root, "worktree", "add", "--detach", "--quiet", *lock, str(path), commit)
        yield path
    finally:
        if keep:
            log.info("kept the replay worktree at %s", path)
        else:
            _forget_worktree(git_root, path)
            shutil.rmtree(tmp, ignore_errors=True)


def _git_location(project: Path) -> tuple[Path, Path]:
    """(git top level, project folder relative to it)."""
    proc = _run(["git", "rev-parse", "--show-toplevel"], project)
    if proc.returncode != 0:
        raise ReplaymlError(
            f"{project} is not in a git repository: a replay checks out the run's commit; "
            f"run it from the project's clone (or pass --project)"
        )
    top = Path(proc.stdout.strip()).resolve()
    return top, project.resolve().relative_to(top)


def _apply_diff(worktree_root: Path, diff: str, tmp: Path) -> None:
    patch = tmp / "code.diff"
    patch.write_bytes(diff.encode("utf-8", "surrogateescape"))  # as recorded, CRLF included
    proc = _run(["git", "apply", "--binary", "--whitespace=nowarn", str(patch)], worktree_root)
    if proc.returncode != 0:
        raise ReplaymlError(
            f"the run's uncommitted changes ({DIFF_ARTIFACT}) do not apply to its commit: "
            f"{_tail(proc.stderr, 4)}"
        )


# ------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class _DvcSetup:
    cache_objects: Path  # the project's md5 object folder (…/.dvc/cache/files/md5)
    remote: str  # "name (url)" of the default remote, for messages
    remote_folder: Path | None = None  # the default remote, when it is a local folder


def _point_dvc_at_project(project: Path, worktree: Path) -> _DvcSetup:
    """Make the worktree use the project's DVC cache and remotes (in its .dvc/config.local)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        with Repo(str(project)) as main:
            cache_root = main.cache.local_cache_dir
            cache_objects = Path(main.cache.local.path)
            remotes = {name: dict(conf) for name, conf in main.config["remote"].items()}
            default = main.config["core"].get("remote")
    except NotDvcRepoError as exc:
        raise DataVersionError(
            f"{project} is not a DVC project: the run's data cannot be restored ({exc})"
        ) from exc
    # DVC writes its config in ASCII: a path with other characters goes through a link
    links = worktree.parent / "dvc-paths"

    def ascii_path(path: str) -> str:
        if path.isascii() or "://" in path:
            return path
        links.mkdir(exist_ok=True)
        link = links / f"{len(list(links.iterdir()))}"
        link.symlink_to(path, target_is_directory=True)
        return str(link)

    with Repo(str(worktree)) as repo, repo.config.edit("local") as conf:
        conf["cache"]["dir"] = ascii_path(str(cache_root))
        conf["cache"]["type"] = WORKTREE_CACHE_TYPE
        for name, remote in remotes.items():  # absolute urls: relative ones would break here
            conf["remote"][name] = {**remote, "url": ascii_path(str(remote.get("url", "")))}
        if default:
            conf["core"]["remote"] = default
    raw_url = str(remotes.get(default or "", {}).get("url", "")) if default else ""
    url = redact_text(raw_url)
    folder = raw_url.removeprefix("file://") if raw_url.startswith("file://") else raw_url
    return _DvcSetup(
        cache_objects,
        f"'{default}' ({url})" if default else "(none configured)",
        Path(folder) if folder and "://" not in folder and os.path.isabs(folder) else None,
    )


def _object(cache_objects: Path, md5: str) -> Path:
    return cache_objects / md5[:2] / md5[2:]


def _remove_if_corrupt(obj: Path, md5: str) -> str | None:
    """Remove a cache object whose bytes do not hash to its name; returns the md5 found."""
    from replayml.lineage.data import file_md5

    if not obj.is_file():
        return None
    found = file_md5(obj)
    if found == md5:
        return None
    obj.chmod(0o644)  # DVC makes cache objects read-only
    obj.unlink()
    return found


def _remove_corrupt_objects(cache_objects: Path, dir_hash: str, out_path: str) -> list[str]:
    """Re-hash the cache objects of a data version and remove the corrupted ones.

    DVC trusts a cache file whose size, inode and mtime it has seen before, so silent
    corruption (bit rot) would otherwise be checked out as is. Returns what was removed.
    """
    from replayml.lineage.data import load_manifest

    digest = dir_hash.removesuffix(".dir")
    manifest_obj = _object(cache_objects, digest + ".dir")
    found = _remove_if_corrupt(manifest_obj, digest)
    if found:
        return [f"the manifest {dir_hash} (found md5 {found} in {manifest_obj})"]
    if not manifest_obj.is_file():
        return []  # nothing of this version is cached yet: all of it comes from the remote
    removed = []
    for rel, md5 in sorted(load_manifest(cache_objects, dir_hash).items()):
        obj = _object(cache_objects, md5)
        found = _remove_if_corrupt(obj, md5)
        if found:
            removed.append(f"{out_path}/{rel} (expected md5 {md5}, found {found} in {obj})")
    return removed


def _bad_files(worktree: Path, dvc_file: str, cache_objects: Path) -> list[tuple[str, str]]:
    """The files of the materialised version whose bytes differ from the manifest: (what
    differs, the md5 the file should have)."""
    from replayml.lineage.data import file_md5, load_manifest, read_dvc_file

    dir_hash, out_path, _ = read_dvc_file(worktree / dvc_file)
    data_dir = (worktree / dvc_file).parent / out_path
    bad = []
    for rel, md5 in sorted(load_manifest(cache_objects, dir_hash).items()):
        path = data_dir / rel
        found = file_md5(path) if path.is_file() else "missing"
        if found != md5:
            bad.append((f"{out_path}/{rel} (expected md5 {md5}, found {found})", md5))
    return bad


def _remote_objects(setup: _DvcSetup, md5s: list[str], dir_hash: str) -> str:
    """What to delete from the remote so that `dvc push` uploads objects `md5s` of data
    version `dir_hash` again: those objects and the version's manifest (while the remote has
    the manifest, `dvc push` takes every file of the version as present). The command, when
    the remote is a local folder."""
    objects = [*md5s, dir_hash]
    layout = [f"files/md5/{m[:2]}/{m[2:]}" for m in objects]
    if setup.remote_folder is None:
        return (
            f"delete object(s) {', '.join(objects)} from the remote {setup.remote} (DVC keeps "
            f"them under its URL as {', '.join(layout)})"
        )
    paths = " ".join(shlex.quote(str(setup.remote_folder / rel)) for rel in layout)
    return f"delete them and the version's manifest from the remote: `rm -f {paths}`"


def _committed_version(worktree: Path, commit: str, dvc_file: str) -> str:
    """The data version `dvc_file` records at `commit` ("" when it is not there)."""
    from replayml.lineage.data import parse_dvc_file

    prefix = _run(["git", "rev-parse", "--show-prefix"], worktree).stdout.strip()
    shown = _run(["git", "show", f"{commit}:{prefix}{dvc_file}"], worktree)
    if shown.returncode != 0:
        return ""
    try:
        return parse_dvc_file(shown.stdout)[0]
    except Exception:  # not a .dvc file DVC would read either
        return ""


def materialise_data(project: Path, worktree: Path, run: RecordedRun, warnings: list[str]) -> None:
    """Check out the run's data version in the worktree from the project's DVC cache, fetching
    what is missing or corrupted from the remote; every file is re-hashed. Raises
    `DataVersionError` when an intact copy of the version is in neither."""
    from replayml.lineage.data import read_dvc_file

    dvc_file, expected = run.tag("data.dvc_file"), run.tag("data.dvc_hash")
    found, out_path, _ = read_dvc_file(worktree / dvc_file)
    if found != expected:
        raise DataVersionError(
            f"{dvc_file} at commit {run.tag('code.commit')[:12]} records {found}, but run "
            f"{run.run_id} recorded data.dvc_hash={expected}; the run's record is inconsistent"
        )
    setup = _point_dvc_at_project(project, worktree)
    removed = _remove_corrupt_objects(setup.cache_objects, expected, out_path)
    if removed:
        warnings.append(
            f"data: corrupted file(s) in the DVC cache ({setup.cache_objects}) were removed and "
            f"restored from the remote {setup.remote}: " + "; ".join(removed)
        )
    failure = _dvc_pull(worktree, dvc_file)
    if failure is not None:
        lost = (
            f"corrupted in the DVC cache (removed): {'; '.join(removed)}, and the remote has no "
            f"copy either"
            if removed
            else f"not complete in the DVC cache ({setup.cache_objects}) nor in the remote"
        )
        commit = run.tag("code.commit")
        if _committed_version(worktree, commit, dvc_file) == expected:
            push = (
                f"with the run's {dvc_file} checked out for the push (commit or stash your "
                f"own changes to {dvc_file} first: `git checkout {commit[:12]} -- {dvc_file} "
                f"&& dvc push {dvc_file} && git checkout HEAD -- {dvc_file}`)"
            )
            regenerate = (
                " (if it is the built-in generated dataset, `make data` at that commit "
                "regenerates it from the generator arguments data.dvc records (under `meta:`; "
                "the defaults, or the `replayml data prepare` options given, when it records "
                "none) and checks it against data.dvc)"
                if dvc_file == "data.dvc"
                else ""
            )
        else:  # the run's .dvc file was an uncommitted change: it is only in the run's diff
            push = (
                f"with the run's {dvc_file}, which was never committed (it is in the run's "
                f"recorded diff, not at {commit[:12]}): `replayml replay {run.run_id} --keep` "
                f"there keeps a worktree holding it; `dvc push {dvc_file}` in that worktree"
            )
            regenerate = ""
        raise DataVersionError(
            f"run {run.run_id} cannot be replayed: data version {expected} ({dvc_file}) is "
            f"{lost}. Remote: {setup.remote}. Push an intact copy from the machine whose DVC "
            f"cache has it, {push}, then replay again{regenerate}. dvc said: "
            f"{_tail(failure, 6)}"
        )
    bad = _bad_files(worktree, dvc_file, setup.cache_objects)
    if bad:
        # the pull copied the remote's corrupted objects into the cache: never push them back
        _remove_corrupt_objects(setup.cache_objects, expected, out_path)
        raise DataVersionError(
            f"run {run.run_id} cannot be replayed: after `dvc pull` from {setup.remote}, "
            f"{'; '.join(what for what, _ in bad)}: the remote's copy is corrupted too (the "
            f"corrupted copies the pull put in the DVC cache {setup.cache_objects} were removed "
            f"again). `dvc push` neither replaces an object the remote has nor checks the files "
            f"of a version whose manifest the remote has, so first "
            f"{_remote_objects(setup, [md5 for _, md5 in bad], expected)}; then push an intact "
            f"copy with `dvc push {dvc_file}` from a checkout whose DVC cache has data version "
            f"{expected}"
        )


# ------------------------------------------------------------------------------- comparing


def _delta(old: float, new: float) -> str:
    return f"{new - old:+.6g}"


def _same_float(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


def compare(
    original: RecordedRun,
    replayed: RecordedRun,
    config_diffs: list[tuple[str, str, str]],
    code_diffs: list[tuple[str, str, str]],
    env_diffs: list[Difference],
) -> list[Difference]:
    """Every difference between a run and its replay, with a plain-language cause."""
    out: list[Difference] = []
    t0, t1 = original.tag, replayed.tag
    same_dvc = t0("data.dvc_hash") == t1("data.dvc_hash")
    packages = {d.key.removeprefix("env."): d for d in env_diffs}
    code_note = (
        "the replay's code differs from the run's (see code)"
        if code_diffs
        else "the code that ran was not the code at the recorded commit (e.g. replayml "
        "imported from outside the repository)"
    )
    lib = [p for p in ("pandas", "numpy", "pyarrow") if p in packages]
    if lib:
        code_note += f", or {', '.join(lib)} differ"
    data_config = [k for k, _, _ in config_diffs if k.split(".")[0] in _DATA_CONFIG]
    if data_config:
        code_note = f"the replay's config differs at {', '.join(data_config)}; or {code_note}"
    if not same_dvc:
        out.append(
            Difference(
                "data",
                "data.dvc_hash",
                t0("data.dvc_hash"),
                t1("data.dvc_hash"),
                cause="the replay read another data version than the run recorded",
            )
        )
    data_diff = not same_dvc
    for name in SPLITS:
        for key in (f"slice_hash.{name}", f"rows.{name}"):
            if t0(key) != t1(key):
                data_diff = True
                cause = (
                    f"slice hash of {name} differs while the DVC hash is the same: "
                    + (
                        "the run trained on cached feature matrices "
                        f"({t0('features_cache')}), which may have been built by other code "
                        "than the recorded commit (e.g. a module the feature builders import "
                        "changed before `dvc repro` reran the features stage); "
                        "`dvc repro -f features` rebuilds them. Otherwise "
                        if t0("features_cache")
                        else ""
                    )
                    + f"the data read differs from the recorded version, or {code_note}"
                    if same_dvc
                    else "follows from the different data version"
                )
                out.append(Difference("data", key, t0(key), t1(key), cause=cause))
    for key, old, new in code_diffs:
        cause = "the worktree did not reproduce the run's code state"
        out.append(Difference("code", key, old, new, cause=cause, outcome=False))
    for key, old, new in config_diffs:
        out.append(
            Difference("config", key, old, new, cause="the replay's config differs", outcome=False)
        )
    out.extend(env_diffs)
    model_keys = ("tree_hash", "prediction_hash", "best_iteration")
    model_diff = any(t0(k) != t1(k) for k in model_keys)
    model_config = [k for k, _, _ in config_diffs if k.startswith("model.")]
    for key in model_keys:
        if t0(key) == t1(key):
            continue
        if data_diff:
            cause = "follows from the different training data (see data)"
        elif key == "prediction_hash" and t0("tree_hash") == t1("tree_hash"):
            cause = "same trees, different predictions: the prediction code differs"
        elif "lightgbm" in packages:
            d = packages["lightgbm"]
            cause = f"same training data, different trees: LightGBM {d.original} vs {d.replay}"
        elif model_config:
            cause = f"same training data, different model config: {', '.join(model_config)}"
        else:
            cause = (
                "same training data and config, different trees: training was not "
                f"deterministic, or {code_note}"
            )
        out.append(Difference("model", key, t0(key), t1(key), cause=cause))
    if data_diff:
        metric_cause = "follows from the data difference"
    elif model_diff:
        metric_cause = "follows from the model difference"
    else:
        metric_cause = "same data and model, different value: the evaluation code differs"
    m0, m1 = original.metrics, replayed.metrics
    for key in sorted(set(m0) | set(m1)):
        if key in m0 and key in m1:
            if _same_float(m0[key], m1[key]):
                continue
            out.append(
                Difference(
                    "metrics",
                    key,
                    repr(m0[key]),
                    repr(m1[key]),
                    delta=_delta(m0[key], m1[key]),
                    cause=metric_cause,
                )
            )
        else:
            out.append(
                Difference(
                    "metrics",
                    key,
                    repr(m0[key]) if key in m0 else "(absent)",
                    repr(m1[key]) if key in m1 else "(absent)",
                    cause="logged by only one of the two runs",
                )
            )
    return sorted(out, key=lambda d: GROUPS.index(d.group))


# ---------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class _Record:
    """What a replay needs from the run's record."""

    recorded: dict[str, Any]  # the config artifact
    config: dict[str, Any]  # what the replay trains from (see `replay_config`)
    changed: set[str]  # keys of `config` changed for the replay
    diff: str | None  # the uncommitted changes of a dirty run


def _read_record(
    reader: RunReader, run: RecordedRun, token: str, reasons: list[str]
) -> _Record | None:
    """The run's config and diff, or None with `reasons` when it cannot be replayed exactly."""
    if run.tag("replayable") == "false":
        why = run.tag("not_replayable_reasons") or "(no reason recorded)"
        reasons.extend(f"recorded as not replayable: {r}" for r in why.split("; "))
    for key in ("code.commit", "data.dvc_file", "data.dvc_hash"):
        if not run.tag(key):
            reasons.append(f"the run has no replayml.{key} tag")
    text = reader.text(run.run_id, CONFIG_ARTIFACT)
    if text is None:
        hint = reader.missing_artifacts_hint(run.run_id)
        reasons.append(f"the run has no {CONFIG_ARTIFACT} artifact{hint}")
    diff = None
    if run.tag("code.dirty") == "true":
        diff = reader.text(run.run_id, DIFF_ARTIFACT)
        if not diff:
            reasons.append(
                f"the run was made from a dirty git tree (code.dirty=true) but has no "
                f"{DIFF_ARTIFACT} artifact: its uncommitted changes are unknown"
                f"{reader.missing_artifacts_hint(run.run_id) if text is not None else ''}"
            )
    recorded = yaml.safe_load(text or "") or {}
    config, changed, missing = replay_config(
        recorded,
        run.run_id,
        token,
        run.experiment_name,
        run.tags_under("redacted_hash."),
        run_name=run.tags.get("mlflow.runName") or f"run {run.run_id}",
    )
    reasons.extend(missing)
    return None if reasons else _Record(recorded, config, changed, diff)


def _pinned_champion(
    spec: StoreSpec, run: RecordedRun, record: _Record, warnings: list[str]
) -> None:
    """Score the model the run scored as its champion, even when its registered version was
    deleted or replaced since: the replay then names the champion's run (whose logged model
    the version was registered from) instead of the version."""
    pinned = (record.config.get("tracking") or {}).get("champion")
    champion_run = run.tag("champion.run_id")
    if not (isinstance(pinned, str) and pinned.startswith("models:/") and champion_run):
        return
    from replayml.registry import resolve_run_ref

    try:
        now = resolve_run_ref(pinned, spec=spec, option="tracking.champion").run_id
        why = f"now points at run {now}" if now != champion_run else ""
    except ReplaymlError as exc:
        why = f"no longer resolves ({str(exc).splitlines()[0][:200]})"
    if not why:
        return
    record.config["tracking"]["champion"] = champion_run
    record.changed.add("tracking.champion")
    warnings.append(
        f"champion: tracking.champion={pinned} {why}; the replay scores the model logged by "
        f"run {champion_run}, which that version held when the run trained"
    )


def _subprocess_env(uri: str, worktree: Path | None = None) -> dict[str, str]:
    # nothing of the calling process's run or sweep may leak into the replay run
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_ENV)}
    if worktree is not None:
        src = worktree / "src"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the worktree's code
    env["MLFLOW_TRACKING_URI"] = uri
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _train(
    reader: RunReader,
    original: RecordedRun,
    config: dict[str, Any],
    token: str,
    worktree: Path,
    tmp: Path,
    trainer: PrestartedPython,
    keep: bool,
    steps: Steps,
) -> RecordedRun:
    """Run `python train.py` of the worktree on the replay config; return the new run.

    `trainer` has imported the libraries already; the worktree's own code (`src/`) comes first
    on its path, as with `PYTHONPATH=<worktree>/src python train.py ...`.
    """
    config_dir = tmp / "config"
    config_dir.mkdir()
    (config_dir / "replay.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    args = [
        "--config-dir",
        str(config_dir),
        "--config-name",
        "replay",
        f"hydra.run.dir={_quote(str(tmp / 'hydra'))}",
        "hydra.output_subdir=null",
        "hydra.job.chdir=false",
    ]
    with steps.step("training with the run's code"):
        proc = trainer.run("train.py", args, worktree, [worktree / "src"])
    hint = "" if keep else " (removed with any file it names below: add --keep to keep them)"
    where = f"in the worktree of {original.tag('code.commit')[:12]}{hint}"
    try:
        found = reader.find(original.experiment_id, REPLAY_ATTEMPT, token)
    except TrackingError as exc:
        if proc.returncode == 0:
            raise
        # the trainer's own message says what went wrong first (often the same store)
        raise TrackingError(
            f"the replay of run {original.run_id} failed: `python train.py` exited "
            f"{proc.returncode} {where}:\n{_tail(proc.stderr or proc.stdout)}\n"
            f"and its run could not be looked up afterwards: {exc}"
        ) from None
    if proc.returncode != 0 or (found and found[0].status != "FINISHED"):
        run = f" (run {found[0].url})" if found else ""
        raise ReplaymlError(
            f"the replay of run {original.run_id} failed{run}: `python train.py` exited "
            f"{proc.returncode} {where}:\n{_tail(proc.stderr or proc.stdout)}"
        )
    if not found:
        raise ReplaymlError(
            f"the replay of run {original.run_id} finished, but no run tagged "
            f"{REPLAY_ATTEMPT}={token} is in {reader.spec.display_uri}: `python train.py` "
            f"{where} did not record its run there:\n{_tail(proc.stdout)}"
        )
    return reader.run(found[0].run_id)


def _recorded_argv(command: str) -> list[str]:
    """A recorded command's arguments (shell-quoted; older runs joined them with spaces),
    with `--opt=value` split into `--opt value`."""
    try:
        args = shlex.split(command)
    except ValueError:  # an unquoted record with an unbalanced quote
        args = command.split()
    out: list[str] = []
    for arg in args:
        opt, sep, value = arg.partition("=")
        out += [opt, value] if sep and opt.startswith("--") else [arg]
    return out


def _option(argv: list[str], *names: str) -> str | None:
    """The value of the last of `names` (`--config-name fast`, `-cn fast`) in `argv`."""
    found = None
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            found = argv[i + 1]
    return found


def _start_recompose(
    reader: RunReader, run: RecordedRun, worktree: Path, env: dict[str, str]
) -> subprocess.Popen[str] | str | None:
    """Recompose the recorded overrides with the config files of the worktree (conf/, or the
    config the run named) in the background, alongside the training; None when there is
    nothing to recompose, or one sentence saying why the run's config cannot be recomposed."""
    if run.tag("replay_of"):  # a replay's config came from an artifact, not from conf/
        return None
    text = reader.text(run.run_id, OVERRIDES_ARTIFACT)
    if text is not None:
        overrides = [str(o) for o in (yaml.safe_load(text) or {}).get("overrides") or []]
    elif run.tag("overrides").startswith("["):
        overrides = [str(o) for o in json.loads(run.tag("overrides"))]
    else:
        return None
    argv = _recorded_argv(run.tag("command"))
    name = _option(argv, "--config-name", "-cn") or "config"
    path = _option(argv, "--config-path", "-cp")
    primary = worktree / (path or "conf")
    extra: list[str] = []
    given = _option(argv, "--config-dir", "-cd")
    for flag, where in (("--config-dir", given), ("--config-path", path)):
        if where and Path(where).is_absolute():
            return (
                f"config: not recomposed: the run read configs from `{flag} {where}`, "
                f"outside its commit, so the recorded config was used"
            )
    if given:
        # relative to the project root (train.py runs there); the DVC stage composes the
        # root's params.yaml (`--config-dir . --config-name params`)
        extra_dir = (worktree / given).resolve()
        if (extra_dir / f"{name}.yaml").is_file():
            primary = extra_dir
        else:
            extra.append(str(extra_dir))
    job = [overrides, str(primary.resolve()), name, extra]
    return subprocess.Popen(
        [sys.executable, "-c", _RECOMPOSE, json.dumps(job)],
        cwd=worktree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _recomposed(
    proc: subprocess.Popen[str] | str | None, commit: str, warnings: list[str]
) -> tuple[dict[str, Any], set[str]] | None:
    """The recomposed config and the keys Hydra's runtime set (not comparable), or None with
    a warning saying why there is none."""
    if proc is None:
        return None
    if isinstance(proc, str):
        warnings.append(proc)
        return None
    out, err = proc.communicate()
    if proc.returncode == 0:
        found = json.loads(out.strip().splitlines()[-1])
        return dict(found["config"]), set(found["runtime"])
    said = [line for line in err.splitlines() if line.startswith("error: ")]
    reason = said[-1].removeprefix("error: ") if said else _tail(err, 3).replace("\n", " ")
    warnings.append(
        f"config: could not recompose the recorded overrides with the config files at commit "
        f"{commit[:12]} ({reason}); the recorded config was used"
    )
    return None


def replay(
    run_id: str,
    *,
    project: Path | None = None,
    tracking_uri: str | None = None,
    keep: bool = False,
    strict_env: bool = False,
    locked_env: bool = False,
) -> ReplayReport:
    """Replay run `run_id` from its recorded code, data and config; compare and tag both runs.

    Raises `RunNotFoundError` for an unknown, deleted, foreign or unfinished run, and
    `ReplaymlError` (e.g. `DataVersionError`) when the replay cannot be carried out. A run that
    cannot be replayed exactly by construction gives a NOT_REPLAYABLE report with the reasons.
    """
    from replayml.config.schema import TrackingConfig
    from replayml.tracking.run import sigterm_raises
    from replayml.tracking.store import store_spec

    project = (project or Path.cwd()).resolve()
    spec = store_spec(TrackingConfig(uri=tracking_uri), project)
    # a SIGTERM (a CI timeout) stops the trainer and removes the worktree on the way out
    with sigterm_raises(), tempfile.TemporaryDirectory(prefix="replayml-trainer-") as idle:
        # the process that will train imports its libraries while the run is read and the
        # worktree and data are prepared (a locked environment's interpreter comes later)
        early = None
        if not locked_env:
            early = PrestartedPython(sys.executable, _subprocess_env(spec.uri), Path(idle))
        try:
            return _replay(run_id, project, spec, keep, strict_env, locked_env, early)
        finally:
            if early is not None:
                early.close()


def _replay(
    run_id: str,
    project: Path,
    spec: StoreSpec,
    keep: bool,
    strict_env: bool,
    locked_env: bool,
    early: PrestartedPython | None,
) -> ReplayReport:
    from replayml.tracking.read import RunReader

    steps = Steps()
    with steps.step("reading the run"):
        reader = RunReader(spec)
        original = reader.run(run_id)
    report = ReplayReport(
        verdict=Verdict.NOT_REPLAYABLE,
        original_run_id=original.run_id,
        original_url=original.url,
        tracking_uri=spec.display_uri,
        commit=original.tag("code.commit"),
    )
    token = uuid.uuid4().hex
    record = _read_record(reader, original, token, report.not_replayable)
    if record is None:
        return report
    _pinned_champion(spec, original, record, report.warnings)

    env_diffs = [] if locked_env else environment_differences(original, project, strict_env)
    strict = [d for d in env_diffs if d.outcome] if strict_env else []
    if strict:  # a refusal, not a verdict on the model: nothing was run (exit 2)
        report.not_replayable = [
            f"--strict-env: {d.key} is {d.replay} here, {d.original} in the run; nothing was run "
            f"(replay without --strict-env to see whether it matters, or with --env in the "
            f"run's own locked environment)"
            for d in strict
        ]
        return report

    git_root, rel = _git_location(project)
    commit = original.tag("code.commit")
    if _run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], git_root).returncode != 0:
        who = original.tags.get("mlflow.user", "")
        host = original.tag("host")
        by = f" ({who or 'its author'}{' on ' + host if host else ''})"
        branch = original.tag("code.branch")
        on = f" on branch {branch}" if branch and branch != "HEAD" else ""
        shallow = _run(["git", "rev-parse", "--is-shallow-repository"], git_root)
        if shallow.stdout.strip() == "true":
            raise ReplaymlError(
                f"commit {commit} of run {original.run_id}{on} is not in the git repository at "
                f"{git_root}, a shallow clone (`git clone --depth`): fetch the commit itself "
                f"(`git fetch --depth 1 origin {commit}`) or the whole history (`git fetch "
                f"--unshallow`)"
            )
        raise ReplaymlError(
            f"commit {commit} of run {original.run_id}{on} is not in the git repository at "
            f"{git_root}: fetch it (`git fetch --all`). If it is still missing, it was never "
            f"pushed or was rewritten since (amend, rebase): the clone that trained the "
            f"run{by} can push it, e.g. `git push origin {commit}:refs/heads/run-{commit[:8]}`"
        )
    with _worktree(git_root, commit, keep) as worktree_root:
        tmp = worktree_root.parent
        worktree = worktree_root / rel
        if keep:
            report.worktree, report.kept_dir, report.git_root = worktree, tmp, git_root
        if record.diff:
            _apply_diff(worktree_root, record.diff, tmp)
        with steps.step("restoring the run's data version"):
            materialise_data(project, worktree, original, report.warnings)
        if not (worktree / "src" / "replayml").is_dir():
            report.warnings.append(
                f"code: commit {commit[:12]} has no src/replayml: the replay runs the installed "
                f"replayml, which may not be the code the run used"
            )
        env = _subprocess_env(spec.uri, worktree)
        trainer = early
        if locked_env:
            with steps.step("building the run's locked environment"):
                python = build_locked_env(project, worktree, tmp / "venv")
            (tmp / "idle").mkdir()
            trainer = PrestartedPython(python, _subprocess_env(spec.uri), tmp / "idle")
        assert trainer is not None
        recompose = _start_recompose(reader, original, worktree, env)
        try:
            replayed = _train(
                reader, original, record.config, token, worktree, tmp, trainer, keep, steps
            )
            recomposed = _recomposed(recompose, commit, report.warnings)
        finally:
            trainer.close()
            if isinstance(recompose, subprocess.Popen) and recompose.poll() is None:
                recompose.kill()
                recompose.communicate()
        code_diffs = _code_differences(reader, original, replayed, record.diff)

    replay_text = reader.text(replayed.run_id, CONFIG_ARTIFACT) or ""
    config_diffs = _config_differences(
        record.recorded, yaml.safe_load(replay_text) or {}, record.changed
    )
    if recomposed is not None:
        # model.num_threads resolves from this machine's cores (and a sweep's parallel jobs)
        recomposed_config, runtime = recomposed
        # tracking.champion is recorded resolved to the version its alias held, like dates
        machine = {"model.num_threads", "tracking.champion", *runtime}
        for key, old, new in _config_differences(record.recorded, recomposed_config, machine):
            report.warnings.append(
                f"config: recomposing the recorded overrides at commit {commit[:12]} gives "
                f"{key}={new}, the recorded config has {old} (the recorded config was used)"
            )
    if locked_env:  # what the replay ran on, as the replay run itself recorded it
        report.warnings.extend(
            f"environment: env.{k} is {replayed.tag('env.' + k)}, the run had "
            f"{original.tag('env.' + k)}"
            for k in sorted(original.tags_under("env."))
            if not k.startswith(("cpu", "platform", "thread"))
            and replayed.tag(f"env.{k}") != original.tag(f"env.{k}")
        )
    report.replay_run_id = replayed.run_id
    report.replay_url = replayed.url
    report.differences = compare(original, replayed, config_diffs, code_diffs, env_diffs)
    outcome = [d for d in report.differences if d.outcome]
    report.verdict = Verdict.DIFFERENT if outcome else Verdict.IDENTICAL
    # a --env replay runs in the run's own locked environment
    report.environment = SAME_ENVIRONMENT if locked_env else replay_environment(env_diffs)
    reader.set_tags(
        replayed.run_id,
        {
            "replayml.replay.verdict": report.verdict.value,
            "replayml.replay.differences": ",".join(d.key for d in outcome)[:4000],
            ENVIRONMENT_TAG: report.environment,
        },
    )
    earlier = reader.run(original.run_id).tags  # as now: another replay may have tagged it
    report.kept_verdict = _kept_verdict(report, earlier)
    if report.kept_verdict:
        report.warnings.append(
            f"verdict: this replay ran in another environment than the run's "
            f"({report.environment}), so its DIFFERENT is recorded on the replay run only; "
            f"run {original.run_id} keeps its {report.kept_verdict} verdict from replay run "
            f"{earlier.get('replayml.replay.run_id', '?')}"
            f"{' in its own environment' if _same_env(earlier) else ''}. Replay with --env "
            f"(or after `uv sync --frozen` at commit {commit[:12]}) to check the run itself"
        )
        return report
    reader.set_tags(
        original.run_id,
        {
            "replayml.replay.verdict": report.verdict.value,
            "replayml.replay.run_id": replayed.run_id,
            "replayml.replay.url": replayed.url,
            ENVIRONMENT_TAG: report.environment,
        },
    )
    _tag_versions(spec, original.run_id, replayed, report.verdict, report.environment)
    return report


def _same_env(tags: dict[str, str]) -> bool:
    return tags.get(ENVIRONMENT_TAG) == SAME_ENVIRONMENT


def _kept_verdict(report: ReplayReport, earlier: dict[str, str]) -> str:
    """The original's earlier verdict when it must stand over this replay's (else ""): a
    DIFFERENT reached in another environment than the run's says nothing against the run, so
    it never replaces an IDENTICAL, nor a verdict reached in the run's own environment."""
    if report.verdict is not Verdict.DIFFERENT or report.environment == SAME_ENVIRONMENT:
        return ""
    verdict = earlier.get("replayml.replay.verdict", "")
    if verdict == Verdict.IDENTICAL or (verdict and _same_env(earlier)):
        return verdict
    return ""


def _tag_versions(
    spec: StoreSpec, run_id: str, replayed: RecordedRun, verdict: Verdict, environment: str
) -> None:
    """Give every registered version of the run its latest replay verdict (the lineage a
    version page shows); a registry that cannot be tagged is said, never fatal."""
    from replayml.tracking.registry_store import RegistryStore

    tags = {
        "replayml.replay.verdict": verdict.value,
        "replayml.replay.run_id": replayed.run_id,
        "replayml.replay.url": replayed.url,
        ENVIRONMENT_TAG: environment,
    }
    try:
        store = RegistryStore(spec)
        for name, version in store.versions_of_run(run_id):
            store.set_version_tags(name, version, tags)
    except Exception as exc:  # the verdict is on the run whatever happens here
        log.warning("could not record the verdict on the run's registered versions: %s", exc)


def _find_uv(project: Path) -> str:
    """uv on PATH, else the one `make install` put in the project's `.tools/`, else the one
    beside the checkout whose `.venv` runs this (a copy of a project has no `.tools/`)."""
    found = shutil.which("uv")
    if found:
        return found
    for tools in (project, Path(sys.prefix).parent):
        local = tools / ".tools" / "bin" / "uv"
        if local.is_file():
            return str(local)
    raise ReplaymlError(
        "--env needs uv to build the run's locked environment; install it with `make install` "
        "(it puts uv in .tools/) or `pip install uv`"
    )


def build_locked_env(project: Path, worktree: Path, venv: Path) -> str:
    """Build the run's locked environment (its commit's uv.lock) in `venv`; its python path."""
    if not (worktree / "uv.lock").is_file():
        raise ReplaymlError(
            "--env: the run's code (its commit, with its uncommitted changes) has no uv.lock "
            "(it was missing or deleted when the run trained), so its environment cannot be "
            "rebuilt; replay without --env (differences are then reported as warnings)"
        )
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    proc = subprocess.run(
        [_find_uv(project), "sync", "--frozen", "--no-install-project", "--no-dev", "--quiet",
         "--python", sys.executable],
        cwd=worktree, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ReplaymlError(
            f"--env: `uv sync --frozen` of the run's uv.lock failed:\n{_tail(proc.stderr)}"
        )
    return str(venv / "bin" / "python")


def _code_differences(
    reader: RunReader, original: RecordedRun, replayed: RecordedRun, diff: str | None
) -> list[tuple[str, str, str]]:
    out = [
        (f"code.{k}", original.tag(f"code.{k}"), replayed.tag(f"code.{k}"))
        for k in ("commit", "dirty")
        if original.tag(f"code.{k}") != replayed.tag(f"code.{k}")
    ]
    if diff and replayed.tag("code.dirty") == "true":
        again = reader.text(replayed.run_id, DIFF_ARTIFACT) or ""
        if _sha(again) != _sha(diff):
            out.append(("code.diff", f"sha256 {_sha(diff)[:12]}", f"sha256 {_sha(again)[:12]}"))
    return out


# ---------------------------------------------------------------------------------- output


def _short(value: str, width: int = 18) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


_TABLE_WIDTH = 140  # narrower (or not a terminal: piped, CI logs): one block per difference


def _print_difference_list(console: Console, differences: list[Difference]) -> None:
    """The differences as plain lines, each value in full, readable at any width."""
    console.print("What differs:", highlight=False)
    previous = ""
    for d in differences:
        mark = " (context)" if not d.outcome else ""
        lines = [f"- {d.group}{mark}: {d.key}", f"    original: {d.original}"]
        lines.append(f"    replay:   {d.replay}")
        if d.delta:
            lines.append(f"    delta:    {d.delta}")
        if d.cause:
            lines.append(f"    cause:    {'(same as above)' if d.cause == previous else d.cause}")
        previous = d.cause
        console.print("\n".join(lines), markup=False, highlight=False)


def print_report(report: ReplayReport) -> None:
    """The verdict, both run links, a table of differences and the warnings (Rich, stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    style = {Verdict.IDENTICAL: "bold green", Verdict.DIFFERENT: "bold red"}.get(
        report.verdict, "bold yellow"
    )
    console.print(
        f"replay of run {report.original_run_id}: [{style}]{report.verdict.value}[/{style}]"
    )
    console.print(f"  original: {report.original_url}")
    if report.replay_url:
        console.print(f"  replay:   {report.replay_url}")
    if report.commit:
        console.print(f"  commit:   {report.commit}   store: {report.tracking_uri}")
    if report.environment and report.environment != SAME_ENVIRONMENT:
        console.print(
            f"  environment: not the run's own ({report.environment}); `--env` replays in it",
            markup=False,
            highlight=False,
        )
    if report.differences and not (console.is_terminal and console.width >= _TABLE_WIDTH):
        _print_difference_list(console, report.differences)
    elif report.differences:
        table = Table(title="What differs", title_justify="left")
        for col in ("group", "key", "original", "replay", "delta"):
            table.add_column(col, no_wrap=True)
        table.add_column("cause", overflow="fold", min_width=30)
        previous = ""
        for d in report.differences:
            mark = "" if d.outcome else " (context)"
            cause = "(same as above)" if d.cause and d.cause == previous else d.cause
            previous = d.cause
            table.add_row(
                d.group + mark, d.key, _short(d.original), _short(d.replay), d.delta, cause
            )
        console.print(table)
    for reason in report.not_replayable:
        console.print(f"[yellow]not replayable:[/yellow] {reason}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if report.worktree:
        console.print(
            f"worktree kept at {report.worktree}; remove it and its temporary folder with "
            f"`{report.cleanup_command}`",
            markup=False,
            highlight=False,
        )
