"""Make the default dataset present at the version `data.dvc` records.

Order: already there and verified → nothing to do; else `dvc pull` from the remote; else
regenerate with the deterministic generator and require the DVC hash to equal the committed one
(same generator arguments + same locked environment = same bytes). A mismatch is an error, never
a silent new data version.

The generator arguments of a version are recorded in the `.dvc` file itself, under the top-level
`meta:` mapping that DVC keeps (through `dvc add` too) and otherwise ignores, so a clone whose
remote lacks the version regenerates it with the arguments it was made with.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from replayml.errors import DataVersionError, ReplaymlError
from replayml.lineage.data import (
    dvc_cache_dir,
    load_manifest,
    parse_dvc_file,
    read_dvc_file,
    verify_all,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorSpec:
    """Arguments of the default dataset's generator (its DVC hash depends on them)."""

    scale: float = 1.0
    seed: int = 20240501
    n_days: int = 60
    start_date: str = "2024-03-01"

    def describe(self) -> str:
        """`scale=4.0, seed=20240501, n_days=60, start_date=2024-03-01`."""
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


#: the key under a `.dvc` file's `meta:` that holds the generator arguments of its version
META_KEY = "replayml_generator"
#: the `replayml data prepare` option of each generator argument
OPTION = {"scale": "--scale", "seed": "--seed", "n_days": "--days", "start_date": "--start"}


def recorded_spec(content: bytes | str, dvc_file: str) -> GeneratorSpec | None:
    """The generator arguments recorded in a `.dvc` file's text; None when it records none
    (data of your own, or a version recorded before the arguments were)."""
    meta = (yaml.safe_load(content) or {}).get("meta")
    if not isinstance(meta, dict) or META_KEY not in meta:
        return None
    raw = meta[META_KEY]
    names = [f.name for f in dataclasses.fields(GeneratorSpec)]
    if not isinstance(raw, dict) or sorted(raw) != sorted(names):
        raise DataVersionError(
            f"{dvc_file}: meta.{META_KEY}={raw!r} should map exactly {', '.join(names)} to the "
            f"generator arguments of the version; restore it with `git checkout -- {dvc_file}`"
        )
    try:
        return GeneratorSpec(
            scale=float(raw["scale"]),
            seed=int(raw["seed"]),
            n_days=int(raw["n_days"]),
            start_date=str(raw["start_date"]),  # a date YAML parsed prints as YYYY-MM-DD
        )
    except (TypeError, ValueError) as exc:
        raise DataVersionError(
            f"{dvc_file}: meta.{META_KEY}={raw!r} is not a valid set of generator arguments "
            f"({exc}); restore it with `git checkout -- {dvc_file}`"
        ) from exc


def record_spec(dvc_path: Path, spec: GeneratorSpec) -> None:
    """Record `spec` under `meta:` in the `.dvc` file, keeping everything else in it."""
    doc = yaml.safe_load(dvc_path.read_bytes())
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    doc["meta"] = {**meta, META_KEY: dataclasses.asdict(spec)}
    dvc_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a DVC command in `root` with this interpreter's DVC."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    if check and proc.returncode != 0:
        raise ReplaymlError(f"`dvc {' '.join(args)}` failed: {dvc_said(proc, 800)}")
    return proc


def dvc_said(proc: subprocess.CompletedProcess[str], limit: int) -> str:
    """The end of what a failed DVC command said: its stderr, else its stdout, else its exit
    code (never an empty reason)."""
    said = proc.stderr.strip() or proc.stdout.strip()
    return said[-limit:] if said else f"exit code {proc.returncode} and no message"


LOCK_MESSAGE = "Unable to acquire lock"


def _pull_waiting_for_lock(
    root: Path, dvc_file: str, lock_wait: float
) -> subprocess.CompletedProcess[str]:
    """`dvc pull`, waiting up to `lock_wait` seconds while another DVC process holds the lock."""
    deadline = time.monotonic() + lock_wait
    while True:
        pulled = dvc(root, "pull", dvc_file, check=False)
        if LOCK_MESSAGE not in pulled.stderr:
            return pulled
        if time.monotonic() > deadline:
            raise DataVersionError(
                f"another DVC process holds the repository lock {root / '.dvc' / 'tmp' / 'lock'} "
                f"(waited {lock_wait:.0f} s); let it finish, or remove the lock file if that "
                f"process is gone, then run `make data` again. Nothing was changed"
            )
        log.info("DVC lock held by another process; waiting")
        time.sleep(1.0)


def _why_unusable(root: Path, dvc_file: str, data_root: str) -> str | None:
    """None when `data_root` holds exactly the version in `dvc_file`, else the reason."""
    try:
        verify_all(root, dvc_file, data_root)
    except DataVersionError as exc:
        return str(exc)
    return None


# What `dvc pull` prints when the remote lacks the version (the expected case on a fresh
# clone whose remote was never filled) or when no remote is configured at all.
_NOT_ON_REMOTE = "nor on remote"
_NO_REMOTE = "no remote specified"


def _explain_failed_pull(pulled: subprocess.CompletedProcess[str], version: str) -> str:
    """Log one line on why `dvc pull` did not restore `version` (DVC's own text for a real
    failure) and return that reason for later messages."""
    said = pulled.stderr.strip()
    if _NOT_ON_REMOTE in said and said.count("ERROR:") <= 1 and "Checkout failed" in said:
        reason = f"the DVC remote has no copy of data version {version}"
        log.info("%s; regenerating it", reason)
    elif _NO_REMOTE in said:
        reason = "no DVC remote is configured"
        log.info(
            "%s (`dvc remote add -d NAME URL` adds one); regenerating data version %s",
            reason,
            version,
        )
    else:
        reason = f"`dvc pull` could not restore data version {version}"
        log.warning(
            "%s; regenerating it. DVC said: %s",
            reason,
            said[-800:] or f"exit code {pulled.returncode}",
        )
    return reason


def _given(spec: GeneratorSpec) -> dict[str, object]:
    """The generator options set to something other than their default (the ones given)."""
    return {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if getattr(spec, f.name) != f.default
    }


def new_version_command(spec: GeneratorSpec) -> str:
    """The `replayml data prepare` command that makes a new version with `spec`."""
    options = "".join(f" {OPTION[k]} {v}" for k, v in _given(spec).items())
    return f"replayml data prepare{options} --new-version"


def _spec_unused(
    spec: GeneratorSpec, dvc_file: str, recorded: GeneratorSpec | None, generated: bool
) -> str:
    """What to say when generator options were given but not used: nothing was generated, or
    the version was regenerated with the arguments its `.dvc` file records."""
    ignored = [
        OPTION[k] for k, v in _given(spec).items() if recorded is None or getattr(recorded, k) != v
    ]
    if not ignored or (generated and recorded is None):
        return ""
    if recorded is None:
        why = f"generator options apply only when the version in {dvc_file} has to be regenerated"
    elif generated:
        why = f"{dvc_file} records the arguments its version was made with ({recorded.describe()})"
    else:
        why = f"the version in {dvc_file} ({recorded.describe()}) needed no generating"
    return (
        f" ({', '.join(ignored)} ignored: {why}; to make a new version of the built-in data "
        f"with them, run `{new_version_command(spec)}`)"
    )


def _push_if_missing(root: Path, dvc_file: str, version: str, push: bool) -> str:
    """Push the version when the default DVC remote lacks it (a `make data` stopped after
    generating it, before its push): what was done, said in a phrase ("" if nothing)."""
    if not push:
        return ""
    from replayml.lineage.sharing import data_in_remote

    if data_in_remote(root, version).shared is not False:  # there, unknown, or no remote
        return ""
    pushed = dvc(root, "push", dvc_file, check=False)
    if pushed.returncode != 0:
        log.warning("dvc push failed (data kept locally): %s", dvc_said(pushed, 300))
        return "; the DVC remote has no copy of it and `dvc push` failed"
    return "; pushed it to the DVC remote, which had no copy"


def prepare(
    root: Path,
    spec: GeneratorSpec = GeneratorSpec(),
    *,
    data_root: str = "data",
    dvc_file: str = "data.dvc",
    push: bool = True,
    progress: bool = False,
    lock_wait: float = 20.0,
) -> str:
    """Ensure `data_root` holds the version in `dvc_file`; returns what was done."""
    from replayml.data.generate import generate

    committed = (root / dvc_file).read_bytes() if (root / dvc_file).exists() else None
    recorded = recorded_spec(committed, dvc_file) if committed is not None else None
    data_dir = root / data_root
    not_pulled = ""
    if committed is not None:
        expected, _, _ = read_dvc_file(root / dvc_file)
        why = _why_unusable(root, dvc_file, data_root)
        if why is None:
            done = f"{data_root}/ is already at {expected}"
            return (
                done
                + _push_if_missing(root, dvc_file, expected, push)
                + _spec_unused(spec, dvc_file, recorded, generated=False)
            )
        if data_dir.exists():
            log.info("%s/ is not usable as is: %s", data_root, why)
        log.info("fetching data version %s with `dvc pull`", expected)
        pulled = _pull_waiting_for_lock(root, dvc_file, lock_wait)
        if pulled.returncode != 0:
            not_pulled = _explain_failed_pull(pulled, expected)
        else:
            why = _why_unusable(root, dvc_file, data_root)
            if why is None:
                return f"restored {data_root}/ at {expected} from the DVC remote" + _spec_unused(
                    spec, dvc_file, recorded, generated=False
                )
            not_pulled = f"`dvc pull` did not restore {data_root}/ ({why})"
            log.warning("%s; regenerating it", not_pulled)
    if data_dir.exists() and any(data_dir.iterdir()) and committed is None:
        raise DataVersionError(
            f"{data_root}/ exists but no {dvc_file} versions it; it is left untouched. Version "
            f"it as it is with `dvc add {data_root}` (and commit {dvc_file}), or move it away "
            f"and run `replayml data prepare` to generate the built-in data (if {dvc_file} was "
            f"deleted by mistake, `git checkout -- {dvc_file}` brings it back)"
        )
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataVersionError(
            f"{data_root}/ exists but is not the version in {dvc_file}; it is left untouched. "
            f"Restore it with `dvc checkout --force {dvc_file}` (which discards changes to "
            f"its files), or move it away and run `make data`"
        )
    used = recorded or spec
    tmp = root / f".{data_root}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = generate(tmp, **dataclasses.asdict(used), progress=progress)
        if data_dir.exists():
            data_dir.rmdir()
        tmp.rename(data_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("generated %s", summary)
    dvc(root, "add", data_root)
    produced, _, _ = read_dvc_file(root / dvc_file)
    if committed is not None:
        expected, _, _ = parse_dvc_file(committed)
        if produced != expected:
            (root / dvc_file).write_bytes(committed)
            raise DataVersionError(
                f"regenerated data ({used.describe()}; {_spec_source(recorded, dvc_file)}) "
                f"hashes to {produced}, but {dvc_file} records {expected}; "
                f"{dvc_file} is unchanged ({not_pulled}). Either "
                f"{dvc_file} was re-versioned with other data (e.g. your own files added under "
                f"{data_root}/ and `dvc add {data_root}`) that was never pushed: run "
                f"`dvc push {dvc_file}` on the machine that has that data, then `make data` "
                f"again, or go back to the "
                f"default data with `git checkout <commit> -- {dvc_file}` (`git log -- "
                f"{dvc_file}` lists the versions) and `make data`. Or the generator or the locked "
                f"environment differs from the one that made the committed version: run "
                f"`uv sync --frozen`"
            )
        (root / dvc_file).write_bytes(committed)
    else:
        record_spec(root / dvc_file, used)
    if push:
        pushed = dvc(root, "push", dvc_file, check=False)
        if pushed.returncode != 0:
            log.warning("dvc push failed (data kept locally): %s", dvc_said(pushed, 300))
    state = "regenerated and verified" if committed is not None else "generated (new version)"
    return f"{state} {data_root}/ at {produced} ({summary.n_events} events)" + _spec_unused(
        spec, dvc_file, recorded, generated=True
    )


def _spec_source(recorded: GeneratorSpec | None, dvc_file: str) -> str:
    """Where the generator arguments of a regeneration came from, for its error message."""
    if recorded is not None:
        return f"the arguments {dvc_file} records"
    return (
        f"{dvc_file} records no generator arguments, so these are the options given or their "
        f"defaults; if the version was made with others, pass them: `replayml data prepare "
        f"--scale ... --seed ... --days ... --start ...`"
    )


def _not_in_cache(root: Path, version: str, data_root: str) -> str | None:
    """None when the DVC cache holds every file of `version`, else what it lacks."""
    cache = dvc_cache_dir(root)
    manifest = load_manifest(cache, version)
    missing = sorted(
        rel for rel, md5 in manifest.items() if not (cache / md5[:2] / md5[2:]).is_file()
    )
    if not missing:
        return None
    return (
        f"{len(missing)} of its files are not in the DVC cache ({cache}), e.g. "
        f"{data_root}/{missing[0]}"
    )


def _check_replaceable(root: Path, dvc_file: str, data_root: str, committed: bytes | None) -> None:
    """Refuse to replace `data_root` unless the DVC cache keeps a copy of it: it must be absent,
    empty, or exactly the version `dvc_file` records."""
    data_dir = root / data_root
    if not data_dir.exists() or not any(data_dir.iterdir()):
        return  # nothing to lose
    if committed is None:
        raise DataVersionError(
            f"{data_root}/ exists but no {dvc_file} versions it, so a new version in its "
            f"place could lose it; nothing was changed. Version it as it is with `dvc add "
            f"{data_root}` (and commit {dvc_file}), or move it away, then run this again"
        )
    version, _, _ = parse_dvc_file(committed)
    why = _why_unusable(root, dvc_file, data_root) or _not_in_cache(root, version, data_root)
    if why is not None:
        raise DataVersionError(
            f"{data_root}/ is not exactly the version in {dvc_file} ({version}) kept in the DVC "
            f"cache, so a new version in its place could lose data; nothing was changed. "
            f"{why}. Either restore the recorded version with `make data` (or `dvc checkout "
            f"--force {dvc_file}`, which discards changes to its files), or version {data_root}/ "
            f"as it is with `dvc add {data_root}` and commit {dvc_file}; then run this again"
        )


def _swap_in(
    root: Path, data_root: str, dvc_file: str, new: Path, committed: bytes | None
) -> None:
    """Put the generated folder `new` in place of `data_root` and `dvc add` it; on a failure,
    put the previous folder and `.dvc` file back."""
    data_dir = root / data_root
    aside = root / f".{data_root}.old-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    if data_dir.exists():
        data_dir.rename(aside)
    new.rename(data_dir)
    try:
        dvc(root, "add", data_root)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        if aside.exists():
            aside.rename(data_dir)
        if committed is None:
            (root / dvc_file).unlink(missing_ok=True)
        else:
            (root / dvc_file).write_bytes(committed)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def new_version(
    root: Path,
    spec: GeneratorSpec,
    *,
    data_root: str = "data",
    dvc_file: str = "data.dvc",
    push: bool = True,
    progress: bool = False,
) -> str:
    """Make `spec`'s data the version `dvc_file` records (generated aside, swapped in only when
    the DVC cache keeps what it replaces, `dvc add`-ed, `spec` recorded); returns what was done
    and the commit to make."""
    from replayml.data.generate import generate

    committed = (root / dvc_file).read_bytes() if (root / dvc_file).exists() else None
    previous = parse_dvc_file(committed)[0] if committed is not None else None
    if committed is not None and recorded_spec(committed, dvc_file) == spec:
        return (
            f"{dvc_file} already records a version made with {spec.describe()} ({previous}); "
            f"nothing to do (`make data` restores it)"
        )
    _check_replaceable(root, dvc_file, data_root, committed)
    tmp = root / f".{data_root}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = generate(tmp, **dataclasses.asdict(spec), progress=progress)
        log.info("generated %s", summary)
        _swap_in(root, data_root, dvc_file, tmp, committed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record_spec(root / dvc_file, spec)
    produced, _, _ = read_dvc_file(root / dvc_file)
    if produced == previous:
        done = f"{data_root}/ made with {spec.describe()} is the version {dvc_file} records"
    else:
        kept = f"; the previous version {previous} stays in the DVC cache" if previous else ""
        done = (
            f"made a new version of {data_root}/: {produced} ({summary.n_events} events; "
            f"{spec.describe()}), recorded in {dvc_file}{kept}"
        )
    if push:
        pushed = dvc(root, "push", dvc_file, check=False)
        if pushed.returncode != 0:
            log.warning("dvc push failed (data kept locally): %s", dvc_said(pushed, 300))
            done += "; `dvc push` failed (run it again before sharing the commit)"
        else:
            done += "; pushed it to the DVC remote"
    return f"{done}. Commit it: `git add {dvc_file} && git commit`"
