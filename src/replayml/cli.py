"""The `replayml` command: data, params and features for DVC; replay, review, registry, sweeps."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import typer

from replayml.errors import ReplaymlError, RunKilled

# markdown: a docstring's wrapped lines are one paragraph in --help, as written; no shell
# completion options (they would list flags as `<bool>` values in the main --help)
app = typer.Typer(
    help="Reproducible, reviewable ML experiments.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
)
data_app = typer.Typer(
    help="The project's DVC-versioned data.", no_args_is_help=True, rich_markup_mode="markdown"
)


def _flag(*args: Any, **kwargs: Any) -> Any:
    """A boolean option: shown without a value placeholder (it takes none)."""
    return typer.Option(*args, metavar="", **kwargs)


app.add_typer(data_app, name="data")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(exc: ReplaymlError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _crash(command: str, exc: Exception) -> None:
    """An unexpected failure of a command whose exit 1 means something (DIFFERENT, regressed):
    the traceback, then exit 2."""
    import traceback

    traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"error: `replayml {command}` failed unexpectedly: {exc!r}", err=True)
    raise typer.Exit(2)


@data_app.command("prepare")
def data_prepare(
    scale: float = typer.Option(1.0, help="Size of the generated dataset (1.0 ≈ 1.4 M events)."),
    seed: int = typer.Option(20240501, help="Generator seed."),
    days: int = typer.Option(60, help="Number of days of events."),
    start: str = typer.Option("2024-03-01", help="First day of events (YYYY-MM-DD)."),
    root: Path = typer.Option(Path("."), help="Project root (holds data.dvc)."),
    push: bool = _flag(True, help="Push a regenerated or new version to the DVC remote."),
    new_version: bool = _flag(
        False,
        "--new-version",
        help="Make a new version of the built-in data with the generator options: replaces "
        "data/ (only when it is exactly the version in data.dvc, which the DVC cache keeps), "
        "runs `dvc add data` and records the options in data.dvc; then commit data.dvc.",
    ),
    verbose: bool = _flag(True, help="Log progress to stderr."),
) -> None:
    """Restore data/ at the version in data.dvc: verify, else `dvc pull`, else regenerate with
    the generator options data.dvc records. `--new-version` makes a new version instead."""
    from replayml.data import prepare as data

    _setup_logging(verbose)
    spec = data.GeneratorSpec(scale=scale, seed=seed, n_days=days, start_date=start)
    make = data.new_version if new_version else data.prepare
    try:
        done = make(root.resolve(), spec, push=push, progress=sys.stderr.isatty())
    except ReplaymlError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo(
            "error: interrupted (Ctrl-C); data/ may be half-way to the new version and the "
            "previous one is in the DVC cache: `git checkout -- data.dvc && make data` "
            "restores it"
            if new_version
            else "error: interrupted (Ctrl-C); data.dvc is unchanged and data/ holds either its "
            "earlier state or the whole verified version: run `make data` again to finish "
            "(it pushes a version the DVC remote lacks)",
            err=True,
        )
        raise typer.Exit(130) from None
    except (OSError, sqlite3.Error) as exc:  # a full disk surfaces as either
        _fail(
            ReplaymlError(
                f"writing failed while preparing the data ({exc}); is the disk full? "
                f"data.dvc and the cache's verified objects are unchanged: free some space and "
                f"run `make data` again"
            )
        )
    typer.echo(done)


@app.command("params")
def params(
    config_dir: Path = typer.Option(Path("conf"), help="The Hydra config folder."),
    overrides: list[str] = typer.Argument(None, help="Hydra overrides, e.g. model=lgbm_ranker."),
) -> None:
    """Print the composed default config as params.yaml (for DVC)."""
    from replayml.config.compose import params_yaml

    try:
        typer.echo(params_yaml(config_dir.resolve(), list(overrides or [])), nl=False)
    except ReplaymlError as exc:
        _fail(exc)


def _check_params_fresh(root: Path, params_file: Path) -> None:
    """Refuse a params.yaml that no longer matches conf/ (the single source of truth)."""
    from replayml.config.compose import check_params_fresh

    if (root / "conf").is_dir():
        check_params_fresh((root / "conf").resolve(), params_file)


@app.command("features")
def features(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Composed config."),
    out: Path = typer.Option(Path("artifacts/features"), "--out", help="Cache folder."),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
    verbose: bool = _flag(True, help="Log progress to stderr."),
) -> None:
    """Build and cache the feature matrices (the DVC `features` stage)."""
    from omegaconf import OmegaConf

    from replayml import matrices
    from replayml.config.resolve import to_run_config
    from replayml.config.schema import register_resolvers
    from replayml.pipeline import prepare
    from replayml.progress import Steps

    _setup_logging(verbose)
    register_resolvers()
    try:
        root = _root(project)
        if not os.environ.get("DVC_EXP_NAME"):  # `dvc exp run` composes params.yaml itself
            _check_params_fresh(root, params_file)
        cfg = to_run_config(OmegaConf.load(params_file))
        resolved, windows, version, m = prepare(cfg, root, Steps())
        matrices.save(root / out, resolved, windows, version, m)
    except ReplaymlError as exc:
        _fail(exc)
    typer.echo(f"features: {m.rows} rows in {out}")


@app.command("sweep")
def sweep_table(
    sweep: str = typer.Argument(..., help="Sweep id (printed by `train.py -m`) or parent run id."),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="Tracking store; default: $MLFLOW_TRACKING_URI or mlruns/."
    ),
    objective: str = typer.Option(None, help="Metric to sort by (default: the sweep's own)."),
    direction: str = typer.Option(None, help="max or min (default: the sweep's own)."),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
) -> None:
    """Print a sweep's children (overrides, metrics, links), best first, as Markdown, with the
    jobs that never ran: the table the sweep logged on its parent run, read again."""
    from replayml.config.schema import TrackingConfig
    from replayml.sweep import SUMMARY_METRICS, objective_direction, recorded_sweep
    from replayml.tracking.store import store_spec
    from replayml.tracking.sweeps import collect, find_parent, summary_markdown

    if direction not in (None, "max", "min"):
        _fail(ReplaymlError(f"--direction {direction!r} is not valid: use --direction max or min"))
    try:
        spec = store_spec(TrackingConfig(uri=tracking_uri), _root(project))
        parent = find_parent(spec, sweep)
        recorded = recorded_sweep(spec, parent)
        metric = objective or recorded.objective
        if metric == recorded.objective:
            direction = direction or recorded.direction
        direction = objective_direction(metric, direction, "--objective", "--direction")
        summary = collect(spec, parent, metric, direction, recorded.never_ran, recorded.errors)
        found = sorted({m for c in summary.children for m in c.metrics})
        if summary.children and metric not in found:
            raise ReplaymlError(
                f"--objective {metric!r}: no child of the sweep has that metric; use one of "
                f"{', '.join(found)}"
            )
    except ReplaymlError as exc:
        _fail(exc)
    typer.echo(summary_markdown(summary, SUMMARY_METRICS), nl=False)


@app.command("doctor")
def doctor(
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="Tracking store; default: $MLFLOW_TRACKING_URI or mlruns/."
    ),
    stale_after: float = typer.Option(600.0, help="Seconds without a heartbeat = dead."),
    fix: bool = _flag(False, "--fix", help="Mark the ghosts KILLED (default: list)."),
    check: bool = _flag(
        False, "--check", help="Exit 1 when ghosts are found and not fixed (for CI)."
    ),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
) -> None:
    """Find runs left RUNNING by a dead process; with --fix, mark them KILLED with a tag."""
    from replayml.config.schema import TrackingConfig
    from replayml.tracking.doctor import find_ghosts, mark_killed
    from replayml.tracking.store import store_spec

    try:
        spec = store_spec(TrackingConfig(uri=tracking_uri), _root(project))
        ghosts = find_ghosts(spec, stale_after)
        if fix:
            mark_killed(spec, ghosts)
    except ReplaymlError as exc:
        _fail(exc)
    for g in ghosts:
        typer.echo(f"{'KILLED' if fix else 'ghost'} {g.run_id}: {g.reason} {g.url}")
    typer.echo(f"{len(ghosts)} run(s) left RUNNING by a dead process" + ("" if fix else
               "; run with --fix to mark them KILLED"))  # fmt: skip
    if check and ghosts and not fix:
        raise typer.Exit(1)


def _root(project: Path) -> Path:
    """The project folder: `--project`, else the nearest folder up from here with `conf/`.

    Like git, the commands work from any subfolder of the project.
    """
    start = project.resolve()
    if project != Path("."):
        return start
    for folder in (start, *start.parents):
        if (folder / "conf" / "config.yaml").is_file() and (folder / "train.py").is_file():
            return folder
    return start


def _store(tracking_uri: str | None, project: Path):  # noqa: ANN202
    from replayml.config.schema import TrackingConfig
    from replayml.tracking.store import store_spec

    return store_spec(TrackingConfig(uri=tracking_uri), _root(project))


_TRACKING_HELP = "Tracking store; default: $MLFLOW_TRACKING_URI, else the project's mlruns/."
NEW_ALIAS_HELP = (
    "--alias is meant as a new alias though it differs only in case from, or is close to, an "
    "existing one (e.g. prod2 next to prod); without it such an alias is refused as a slip."
)


@app.command("review")
def review_run(
    run_id: str = typer.Argument(
        ...,
        metavar="RUN",
        help="The run to review: its id, or models:/NAME@ALIAS or models:/NAME/VERSION (the "
        "version's source run).",
    ),
    baseline: str = typer.Option(
        None, "--baseline", help="A run id, or models:/NAME@ALIAS or models:/NAME/VERSION."
    ),
    name: str = typer.Option(
        None, "--name", help="Without --baseline: compare with this registered model's @prod."
    ),
    alias: str = typer.Option("prod", "--alias", help="The alias --name resolves."),
    fail_on: list[str] = typer.Option(
        None, "--fail-on", help="Exit 1 when this metric regressed (repeatable; for CI)."
    ),
    tolerance: float = typer.Option(
        0.0, "--tolerance", help="Absolute change allowed before a metric counts as regressed."
    ),
    significant: bool = _flag(
        False,
        "--significant",
        help="A --fail-on metric counts as regressed only when its 95% bootstrap interval lies "
        "wholly on the worse side (a difference beyond the test set's noise).",
    ),
    bootstrap: int = typer.Option(
        1000,
        "--bootstrap",
        min=0,
        help="Bootstrap resamples of the test user-days behind the intervals of the deltas "
        "(0: no intervals).",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the Markdown here."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
    verbose: bool = _flag(False, "--verbose", "-v", help="Log progress to stderr."),
) -> None:
    """Markdown review of a run against a baseline: metrics, config, data and code.

    Exit code: 0, 1 when a --fail-on metric regressed, 2 on errors (also when a --fail-on
    metric cannot be judged: no baseline found, e.g. no version holds --alias, or a baseline
    that is not comparable).
    """
    from replayml.review import review

    _setup_logging(verbose)
    if output is not None and not output.parent.is_dir():
        _fail(ReplaymlError(f"--output {output}: the folder {output.parent} does not exist; "
                            f"create it or write the review elsewhere"))  # fmt: skip
    if not math.isfinite(tolerance) or tolerance < 0:
        what = "is negative" if tolerance < 0 else "is not a finite number"
        _fail(ReplaymlError(f"--tolerance {tolerance} {what}: use 0 (any worsening counts) or "
                            f"the absolute change allowed, e.g. 0.002"))  # fmt: skip
    if significant and not fail_on:
        _fail(ReplaymlError("--significant changes only what --fail-on judges: add "
                            "--fail-on METRIC (test_auc, ...) or drop it"))  # fmt: skip
    if baseline is not None and name is not None:
        _fail(ReplaymlError(f"--baseline {baseline} and --name {name} both say what to compare "
                            f"with: pass one (--name {name} --alias {alias} is "
                            f"--baseline models:/{name}@{alias})"))  # fmt: skip
    try:
        spec = _store(tracking_uri, project)
        result = review(
            run_id,
            baseline,
            spec=spec,
            name=name,
            alias=alias,
            tolerance=tolerance,
            require_baseline=bool(fail_on),
            resamples=bootstrap,
            project=_root(project),
        )
        for metric in fail_on or []:
            result.metric(metric)  # a misspelt metric fails before anything is printed
    except ReplaymlError as exc:
        _fail(exc)
    except Exception as exc:  # a crash is not a verdict: exit 1 would read as "regressed"
        _crash("review", exc)
    not_judged: ReplaymlError | None = None
    try:
        regressed = [m for m in (fail_on or []) if result.regressed(m, significant=significant)]
    except ReplaymlError as exc:  # e.g. not comparable: the review says why, then exit 2
        not_judged, regressed = exc, []
    markdown = result.markdown
    if fail_on:  # what the gate decided, for whoever reads the review in the pull request
        gate = ", ".join(f"`{m}`" for m in fail_on)
        if not_judged is not None:
            verdict = "**not judged** (see above)"
        elif regressed:
            verdict = f"**failed**: {', '.join(regressed)} regressed"
        else:
            verdict = "**passed**"
        rule = f"tolerance {tolerance:g}" + (", beyond the noise" if significant else "")
        markdown += f"\nGate: --fail-on {gate} ({rule}): {verdict}.\n"
    typer.echo(markdown, nl=False)
    if output is not None:
        _write_output(output, markdown)
    if not_judged is not None:
        _fail(not_judged)
    if regressed:
        typer.echo(f"regressed: {', '.join(regressed)}", err=True)
        raise typer.Exit(1)


def _write_output(output: Path, text: str) -> None:
    """Write `text` to `output`: a regular file is replaced whole (never half-written); a
    device, pipe or link is written through, never replaced by a file."""
    special = output.is_symlink() or (output.exists() and not output.is_file())
    tmp = output.with_name(output.name + ".tmp")
    try:
        if special:
            with output.open("w") as f:
                f.write(text)
        else:
            tmp.write_text(text)
            tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _fail(ReplaymlError(f"--output {output}: cannot write it ({exc.strerror})"))


@app.command("register")
def register_run(
    run_id: str = typer.Argument(..., help="The run whose logged model becomes a version."),
    name: str = typer.Option(..., "--name", help="Registered model name."),
    alias: str = typer.Option(None, "--alias", help="Move this alias (prod, ab, ...) to it."),
    ab_label: str = typer.Option(None, "--ab-label", help="A/B label, e.g. treatment."),
    ab_group: str = typer.Option(None, "--ab-group", help="A/B group (experiment) name."),
    force: bool = _flag(
        False,
        "--force",
        help="Register anyway: a failed, non-replayable or undiffed dirty run, or one whose "
        "commit or data others cannot fetch.",
    ),
    new_alias: bool = _flag(False, "--new-alias", help=NEW_ALIAS_HELP),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
    verbose: bool = _flag(False, "--verbose", "-v", help="Log progress to stderr."),
) -> None:
    """Register a run's model as a new version, tagged with the run's lineage."""
    from replayml.registry import register, same_run_versions
    from replayml.tracking.registry_store import model_version_url

    _setup_logging(verbose)
    try:
        spec = _store(tracking_uri, project)
        done = register(
            run_id,
            name,
            spec=spec,
            alias=alias,
            ab_label=ab_label,
            ab_group=ab_group,
            force=force,
            project=_root(project),
            new_alias=new_alias,
        )
        earlier = same_run_versions(name, done.run_id, spec=spec, exclude=done.version)
    except ReplaymlError as exc:
        _fail(exc)
    # the version page on the UI address of the run link printed with it
    page = model_version_url(spec, done.name, done.version, done.run_url.split("/#/", 1)[0])
    typer.echo(f"registered {done.name} version {done.version} from run {done.run_url}")
    typer.echo(f"version page: {page}")
    if earlier:
        listed = ", ".join(earlier)
        typer.echo(
            f"warning: run {done.run_id} was already registered as {done.name} version"
            f"{'s' if len(earlier) > 1 else ''} {listed}: version {done.version} is another "
            f"copy of the same model (to point an alias at the existing one, use `replayml "
            f"promote {done.name} {earlier[-1]} --alias ALIAS`)",
            err=True,
        )
    if done.forced_reasons:
        typer.echo(f"forced despite: {'; '.join(done.forced_reasons)}", err=True)
    if done.alias_move is not None:
        typer.echo(done.alias_move.describe())
        for warning in done.alias_move.warnings:
            typer.echo(f"warning: {warning}", err=True)


@app.command("models")
def list_models(
    name: str = typer.Argument(None, help="Registered model name (none: list the models)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
) -> None:
    """The versions of a registered model: aliases, A/B labels, source runs, metrics; without
    a name, every registered model with its latest version and aliases."""
    from replayml.registry import model_rows, models_markdown, models_rich

    try:
        spec = _store(tracking_uri, project)
        if name is None:
            from replayml.tracking.registry_store import RegistryStore

            listed = RegistryStore(spec).models()
        else:
            rows = model_rows(name, spec=spec)
    except ReplaymlError as exc:
        _fail(exc)
    if name is None:
        if not listed:
            typer.echo(f"no registered models in {spec.display_uri}")
            return
        from replayml.tracking.registry_store import model_version_url

        typer.echo("| model | latest version | aliases | latest version page |\n|---|---|---|---|")
        for model, latest, aliases in listed:
            held = ", ".join(f"{a} → v{v}" for a, v in sorted(aliases.items())) or "-"
            page = model_version_url(spec, model, latest) if latest.isdigit() else "-"
            typer.echo(f"| {model} | {latest} | {held} | {page} |")
        return
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(models_rich(name, rows))
    else:
        typer.echo(models_markdown(name, rows), nl=False)


def _moved(move) -> None:  # noqa: ANN001
    typer.echo(move.describe())
    for warning in move.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command("promote")
def promote_version(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="The version to move the alias to."),
    alias: str = typer.Option("prod", "--alias", help="The alias to move."),
    expect_version: str = typer.Option(
        None,
        "--expect-version",
        help="Move only if the alias is now held by this version ('none': unset).",
    ),
    force: bool = _flag(
        False,
        "--force",
        help="Move it even to a version registered outside replayml whose run is not "
        "replayable, whose run is gone, or of another model kind than the alias's holder.",
    ),
    ab_label: str = typer.Option(
        None, "--ab-label", help="Set the version's A/B label (e.g. control), with --ab-group."
    ),
    ab_group: str = typer.Option(
        None, "--ab-group", help="Set the version's A/B group (experiment), with --ab-label."
    ),
    new_alias: bool = _flag(False, "--new-alias", help=NEW_ALIAS_HELP),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
) -> None:
    """Move an alias to a version (compare-and-set, audited on both versions); with
    --ab-label/--ab-group, also set the version's A/B label and group (audited too)."""
    from replayml.registry import promote

    try:
        move = promote(
            name,
            version,
            alias,
            spec=_store(tracking_uri, project),
            expect=expect_version,
            force=force,
            ab_label=ab_label,
            ab_group=ab_group,
            new_alias=new_alias,
        )
    except ReplaymlError as exc:
        _fail(exc)
    _moved(move)
    if move.ab_change:
        typer.echo(move.ab_change)


@app.command("rollback")
def rollback_alias(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("prod", "--alias", help="The alias to move back."),
    expect_version: str = typer.Option(
        None,
        "--expect-version",
        help="Roll back only if the alias is now held by this version ('none': unset, its "
        "holder deleted).",
    ),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
    project: Path = typer.Option(Path("."), "--project", help="Project root."),
) -> None:
    """Move an alias back to the version that held it before (compare-and-set, audited)."""
    from replayml.registry import rollback

    try:
        move = rollback(name, alias, spec=_store(tracking_uri, project), expect=expect_version)
    except ReplaymlError as exc:
        _fail(exc)
    _moved(move)


def main() -> None:
    """Console-script entry: the command's exit status, without the interpreter's teardown."""
    from replayml.entry import exit_now

    try:
        app()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


@app.command("replay")
def replay_run(
    run_id: str = typer.Argument(
        ...,
        help="The MLflow run id to replay, or models:/NAME@ALIAS or models:/NAME/VERSION (the "
        "version's source run).",
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="Tracking store holding the run (default: $MLFLOW_TRACKING_URI, else the "
        "project's mlruns/ store). The replay run is logged there too.",
    ),
    keep: bool = _flag(
        False, "--keep", help="Keep the temporary git worktree of the replay (path printed)."
    ),
    strict_env: bool = _flag(
        False,
        "--strict-env",
        help="Refuse (exit 2, nothing run) when the lock file, Python, platform or package "
        "versions differ from the run's; by default they are warnings.",
    ),
    locked_env: bool = _flag(
        False,
        "--env",
        help="Replay inside the run's locked environment (its uv.lock, built with uv in a "
        "temporary venv) instead of the current one.",
    ),
    project: Path = typer.Option(
        Path("."), "--project", help="Project root: a git clone with data.dvc and conf/."
    ),
    verbose: bool = _flag(False, "--verbose", "-v", help="Log progress to stderr."),
) -> None:
    """Replay a run exactly from its recorded commit, data version and config, and compare.

    The commit runs in a temporary git worktree: the current checkout is never touched.

    Data comes from the DVC cache or remote and is re-hashed; corrupt cache files are repaired.

    Exit code: 0 IDENTICAL, 1 DIFFERENT, 2 not replayable or error.
    """
    from replayml.registry import resolve_run_ref
    from replayml.replay import print_report, replay

    _setup_logging(verbose)
    try:
        ref = resolve_run_ref(run_id, spec=_store(tracking_uri, project), option="RUN_ID")
    except ReplaymlError as exc:
        _fail(exc)
    if ref.version is not None:
        typer.echo(f"replaying {ref.describe()}")
    try:
        report = replay(
            ref.run_id,
            project=_root(project),
            tracking_uri=tracking_uri,
            keep=keep,
            strict_env=strict_env,
            locked_env=locked_env,
        )
    except ReplaymlError as exc:
        _fail(exc)
    except (RunKilled, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)  # Ctrl-C
        typer.echo(
            f"error: {'interrupted' if interrupted else exc}; the replay stopped, its training "
            f"run (if it had started) is marked KILLED and its worktree is removed",
            err=True,
        )
        raise typer.Exit(130 if interrupted else RunKilled.exit_code) from None
    except Exception as exc:  # a crash is not a verdict: exit 1 would read as DIFFERENT
        _crash("replay", exc)
    print_report(report)
    raise typer.Exit(report.exit_code)
