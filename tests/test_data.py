"""Data version checks (A8, A9, A10) and the default dataset's preparation."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, SMALL_SCALE, all_runs, compose_cfg, dvc, git, run_train_py
from replayml.data.load import load
from replayml.data.prepare import (
    GeneratorSpec,
    new_version,
    prepare,
    record_spec,
    recorded_spec,
)
from replayml.errors import DataSchemaError, DataVersionError
from replayml.lineage.data import dvc_cache_dir, load_manifest, read_dvc_file, verify_all
from replayml.pipeline import RunContext, check_config, run_experiment


def _a_partition(root: Path) -> Path:
    return sorted((root / "data" / "events").glob("date=*/part-0.parquet"))[-1]


def _rewrite(path: Path, table: pa.Table) -> None:
    path.chmod(0o644)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    path.unlink()  # break any link into the DVC cache, as an editor would
    tmp.rename(path)


def test_edited_data_is_refused_naming_path_and_hashes(project: Path) -> None:  # A8
    part = _a_partition(project)
    table = pq.read_table(part)
    _rewrite(part, table.slice(1))
    proc = run_train_py(project)
    assert proc.returncode == 2
    rel = part.relative_to(project).as_posix()
    assert rel in proc.stderr
    assert "expected md5" in proc.stderr and "found" in proc.stderr
    assert all_runs(project) == []
    # the command the error advises restores the version (a plain `dvc checkout` refuses to
    # overwrite an edited file)
    advised = re.search(r"Restore it with `(dvc checkout[^`]*)`", proc.stderr)
    assert advised, proc.stderr
    dvc(project, *advised[1].split()[1:])
    assert run_train_py(project, "model.num_boost_round=5").returncode == 0


def test_a_table_outside_the_data_root_is_refused_naming_the_key(project: Path) -> None:
    outside = project / "elsewhere"
    outside.mkdir()
    shutil.copy(project / "data" / "items.parquet", outside / "items.parquet")
    proc = run_train_py(project, "data.items.path=../elsewhere/items.parquet")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.items.path=../elsewhere/items.parquet lies outside data.root=data" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert all_runs(project) == []


def test_corrupted_cache_behind_a_hardlink_is_caught(project: Path) -> None:
    """`dvc status` trusts its hash cache; our re-hash of the bytes read does not."""
    dvc(project, "config", "cache.type", "hardlink")
    dvc(project, "checkout", "--relink", "-q")
    part = _a_partition(project)
    part.chmod(0o644)
    with part.open("r+b") as fh:  # same size, same mtime window: flip bytes in place
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(DataVersionError, match="differs from data.dvc"):
        run_experiment(
            compose_cfg(project), RunContext(project_root=project, output_dir=project / "o")
        )
    assert all_runs(project) == []


def test_missing_data_points_at_dvc_pull(project: Path) -> None:  # A9
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    proc = run_train_py(project)
    assert proc.returncode == 2
    assert "`dvc pull data.dvc`" in proc.stderr and "make data" in proc.stderr
    assert all_runs(project) == []
    dvc(project, "pull", "-q", "data.dvc")  # the advice, as given: the data's own .dvc file
    again = run_train_py(project)
    assert again.returncode == 0, again.stderr[-2000:]


def test_renamed_column_names_column_expected_and_found(project: Path) -> None:  # A10
    cfg = compose_cfg(project)
    with pytest.raises(
        DataSchemaError, match=r"no column 'contacted' \(data.events.label=contacted\); found \["
    ):
        load(
            compose_cfg(project, ["data.events.label=contacted"]).data,
            project,
            *_days(cfg),
        )
    items = project / "data" / "items.parquet"
    table = pq.read_table(items)
    _rewrite(items, table.set_column(2, "price", table.column("price").cast(pa.string())))
    with pytest.raises(DataSchemaError, match="'price'.*should be number, found string"):
        load(cfg.data, project, *_days(cfg))


def _days(cfg):  # noqa: ANN001, ANN202
    from datetime import date

    return date(2024, 4, 20), date(2024, 4, 29)


def test_schema_drift_end_to_end_is_a_clear_error(project: Path) -> None:
    items = project / "data" / "items.parquet"
    table = pq.read_table(items)
    _rewrite(items, table.rename_columns(["item_id", "cat", *table.column_names[2:]]))
    dvc(project, "add", "-q", "data")  # a new, consistent data version with the drift
    proc = run_train_py(project)
    assert proc.returncode == 2
    assert "'category'" in proc.stderr and "data.items.category" in proc.stderr
    assert all_runs(project) == []


def test_prepare_is_a_noop_when_data_is_verified(project: Path) -> None:
    before = (project / "data.dvc").read_bytes()
    done = prepare(project, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert "already at" in done
    assert (project / "data.dvc").read_bytes() == before


def test_prepare_pushes_a_verified_version_the_remote_lacks(project: Path, tmp_path: Path) -> None:
    """A `make data` stopped between generating and pushing leaves the data unshared: the
    next one pushes it."""
    from replayml.lineage.sharing import data_in_remote

    version = read_dvc_file(project / "data.dvc")[0]
    dvc(project, "remote", "add", "-d", "-f", "empty", str(tmp_path / "empty-remote"))
    assert data_in_remote(project, version).shared is False
    done = prepare(project, GeneratorSpec(scale=SMALL_SCALE), push=True)
    assert "already at" in done and "pushed it to the DVC remote, which had no copy" in done
    assert data_in_remote(project, version).shared is True
    again = prepare(project, GeneratorSpec(scale=SMALL_SCALE), push=True)
    assert "pushed" not in again
    assert "pushed" not in prepare(project, GeneratorSpec(scale=SMALL_SCALE), push=False)


def test_generator_options_that_were_not_used_are_said(project: Path) -> None:
    # `replayml data prepare --seed 7` on data already at its version generates nothing; the
    # scale it was made with, recorded in data.dvc, is not an ignored option
    done = prepare(project, GeneratorSpec(scale=SMALL_SCALE, seed=7), push=False)
    assert "already at" in done
    assert f"(--seed ignored: the version in data.dvc (scale={SMALL_SCALE}, seed=20240501" in done
    assert "run `replayml data prepare --scale 0.03 --seed 7 --new-version`)" in done
    done = prepare(project, GeneratorSpec(), push=False)
    assert "ignored" not in done


def test_prepare_pulls_from_remote_into_an_empty_clone(project: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    done = prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert "from the DVC remote" in done
    verify_all(clone, "data.dvc", "data")


def test_regeneration_reproduces_the_committed_hash(project: Path, tmp_path: Path) -> None:
    """Same seed + same locked environment = same bytes = same DVC hash."""
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    dvc(clone, "remote", "remove", "local")
    done = prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert done.startswith("regenerated and verified")
    assert read_dvc_file(clone / "data.dvc") == read_dvc_file(project / "data.dvc")


def test_regeneration_mismatch_is_an_error_naming_the_arguments_and_keeps_data_dvc(
    project: Path, tmp_path: Path
) -> None:
    """data.dvc records arguments that do not reproduce its version (a changed generator)."""
    record_spec(project / "data.dvc", GeneratorSpec(scale=SMALL_SCALE, seed=1))
    git(project, "commit", "-qam", "arguments that do not make this version")
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    dvc(clone, "remote", "remove", "local")
    committed = (clone / "data.dvc").read_bytes()
    with pytest.raises(DataVersionError, match="data.dvc is unchanged") as e:
        prepare(clone, GeneratorSpec(seed=5), push=False)
    assert (
        f"regenerated data (scale={SMALL_SCALE}, seed=1, n_days=60, start_date=2024-03-01; the "
        f"arguments data.dvc records) hashes to"
    ) in str(e.value)
    assert (clone / "data.dvc").read_bytes() == committed


def test_a_version_recording_no_arguments_regenerates_from_the_options_given(
    project: Path, tmp_path: Path
) -> None:
    """A data.dvc from before the arguments were recorded: the options (or defaults) are used,
    and a mismatch says so."""
    doc = yaml.safe_load((project / "data.dvc").read_text())
    del doc["meta"]
    (project / "data.dvc").write_text(yaml.safe_dump(doc, sort_keys=False))
    git(project, "commit", "-qam", "a data.dvc without generator arguments")
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    dvc(clone, "remote", "remove", "local")
    with pytest.raises(DataVersionError, match="data.dvc records no generator arguments, so"):
        prepare(clone, GeneratorSpec(scale=SMALL_SCALE, seed=1), push=False)
    shutil.rmtree(clone / "data")
    done = prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert done.startswith("regenerated and verified") and "ignored" not in done


def test_a_version_made_at_another_scale_regenerates_in_a_fresh_clone(
    project: Path, tmp_path: Path
) -> None:
    """`git rm data.dvc; rm -rf data; replayml data prepare --scale ...`, committed, never
    pushed: a clone's `make data` regenerates it from the arguments recorded in data.dvc."""
    git(project, "rm", "-q", "data.dvc")
    shutil.rmtree(project / "data")
    made = GeneratorSpec(scale=0.04)
    prepare(project, made, push=False)
    git(project, "add", "data.dvc")
    git(project, "commit", "-qm", "data at scale 0.04")
    assert recorded_spec((project / "data.dvc").read_bytes(), "data.dvc") == made
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    done = prepare(clone, GeneratorSpec(), push=False)  # what `make data` passes
    assert done.startswith("regenerated and verified"), done
    assert (clone / "data.dvc").read_bytes() == (project / "data.dvc").read_bytes()
    assert "up to date" in dvc(clone, "status", "data.dvc").stdout
    # an option other than the recorded one is said to be ignored
    shutil.rmtree(clone / "data")
    shutil.rmtree(clone / ".dvc" / "cache")
    done = prepare(clone, GeneratorSpec(scale=2.0), push=False)
    assert "(--scale ignored: data.dvc records the arguments its version was made with" in done


def _replayml_data_prepare(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replayml", "data", "prepare", "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_new_version_replaces_the_recorded_version_and_a_clone_restores_it(
    project: Path, tmp_path: Path
) -> None:
    """`replayml data prepare --scale ... --new-version`: a new version in data.dvc with its
    arguments, pushed; the previous one stays in the cache; a clone's `make data` gets it."""
    from replayml.lineage.sharing import data_in_remote

    dvc(project, "remote", "modify", "local", "url", str(tmp_path / "remote"))  # its own
    dvc(project, "push", "-q", "data.dvc")
    previous, _, _ = read_dvc_file(project / "data.dvc")
    proc = _replayml_data_prepare(project, "--scale", "0.04", "--new-version")
    assert proc.returncode == 0, proc.stderr
    produced, _, _ = read_dvc_file(project / "data.dvc")
    assert produced != previous
    assert f"made a new version of data/: {produced}" in proc.stdout
    assert "Commit it: `git add data.dvc && git commit`" in proc.stdout
    assert recorded_spec((project / "data.dvc").read_bytes(), "data.dvc") == GeneratorSpec(0.04)
    verify_all(project, "data.dvc", "data")
    load_manifest(dvc_cache_dir(project), previous)  # still in the cache
    assert data_in_remote(project, produced).shared is True
    assert "up to date" in dvc(project, "status", "data.dvc").stdout
    git(project, "add", "data.dvc", ".dvc/config")
    git(project, "commit", "-qm", "data at scale 0.04")
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    assert "from the DVC remote" in prepare(clone, GeneratorSpec(), push=False)
    # the same options again: nothing to do
    again = _replayml_data_prepare(project, "--scale", "0.04", "--new-version")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_new_version_refuses_data_the_cache_does_not_keep(project: Path) -> None:
    """An extra file, or a version whose files are gone from the cache: nothing is changed."""
    committed = (project / "data.dvc").read_bytes()
    mine = project / "data" / "mine.csv"
    mine.write_text("precious\n")
    with pytest.raises(DataVersionError, match="nothing was changed") as e:
        new_version(project, GeneratorSpec(scale=0.04), push=False)
    assert "data/mine.csv" in str(e.value) and "`dvc add data`" in str(e.value)
    assert mine.read_text() == "precious\n"
    assert (project / "data.dvc").read_bytes() == committed
    mine.unlink()
    version, _, _ = read_dvc_file(project / "data.dvc")
    cache = dvc_cache_dir(project)
    md5 = next(iter(load_manifest(cache, version).values()))
    (cache / md5[:2] / md5[2:]).unlink()
    with pytest.raises(DataVersionError, match="1 of its files are not in the DVC cache"):
        new_version(project, GeneratorSpec(scale=0.04), push=False)
    assert (project / "data.dvc").read_bytes() == committed
    verify_all(project, "data.dvc", "data")


def test_new_version_refuses_unversioned_data(project: Path) -> None:
    git(project, "rm", "-q", "data.dvc")
    with pytest.raises(DataVersionError, match="exists but no data.dvc versions it"):
        new_version(project, GeneratorSpec(scale=0.04), push=False)
    assert not (project / "data.dvc").exists()
    assert (project / "data" / "items.parquet").exists()


def test_a_failing_dvc_add_shows_dvcs_reason(tmp_path: Path) -> None:
    """`replayml data prepare` in a folder that is no DVC repository: DVC's own words."""
    proc = _replayml_data_prepare(tmp_path, "--scale", str(SMALL_SCALE), "--no-push")
    assert proc.returncode == 2
    (said,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert said.startswith("error: `dvc add data` failed: ERROR: you are not inside of a DVC")


def test_the_committed_data_dvc_records_the_default_arguments() -> None:
    """`make data` regenerates the default version from what data.dvc records: the defaults."""
    assert recorded_spec((REPO / "data.dvc").read_bytes(), "data.dvc") == GeneratorSpec()


def test_remote_without_the_version_is_one_info_line_and_unpushed_own_data_is_named(
    project: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """data.dvc re-versioned with the user's own files but never pushed: a clone can neither
    pull nor regenerate it, and the error says how to get either version."""
    own = project / "data" / "shop"
    own.mkdir()
    (own / "events.csv").write_text("visitor,product,seen_at,bought\nu1,p1,2024-03-01,1\n")
    dvc(project, "add", "-q", "data")
    git(project, "add", "data.dvc")
    git(project, "commit", "-qm", "own data, not pushed")
    mine, _, _ = read_dvc_file(project / "data.dvc")
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    committed = (clone / "data.dvc").read_bytes()
    caplog.set_level(logging.INFO, logger="replayml.data.prepare")
    with pytest.raises(
        DataVersionError, match="never pushed: run `dvc push data.dvc` on the machine"
    ) as e:
        prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert f"the DVC remote has no copy of data version {mine}" in str(e.value)
    assert "`git checkout <commit> -- data.dvc`" in str(e.value)
    assert "`uv sync --frozen`" in str(e.value)
    assert (clone / "data.dvc").read_bytes() == committed
    said = [r.getMessage() for r in caplog.records]
    assert f"the DVC remote has no copy of data version {mine}; regenerating it" in said
    assert not [m for m in said if "ERROR" in m or "Checkout failed" in m], said


def test_a_failing_pull_shows_dvcs_message_then_regenerates(
    project: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    not_a_folder = tmp_path / "remote-file"
    not_a_folder.write_text("not a DVC remote\n")
    dvc(clone, "remote", "modify", "local", "url", str(not_a_folder))
    caplog.set_level(logging.INFO, logger="replayml.data.prepare")
    done = prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert done.startswith("regenerated and verified")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "`dvc pull` could not restore data version" in warning
    assert "Not a directory" in warning  # DVC's own words


def test_prepare_never_overwrites_foreign_data(project: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(project.parent, "clone", "-q", str(project), str(clone))
    dvc(clone, "remote", "remove", "local")
    (clone / "data").mkdir()
    mine = clone / "data" / "mine.csv"
    mine.write_text("precious\n")
    with pytest.raises(DataVersionError, match="left untouched"):
        prepare(clone, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert mine.read_text() == "precious\n"


def test_data_without_a_dvc_file_is_left_untouched_with_advice_that_fits(project: Path) -> None:
    """No data.dvc to restore from: the advice is to version the folder or move it away."""
    git(project, "rm", "-q", "data.dvc")
    before = sorted(p.relative_to(project) for p in (project / "data").rglob("*"))
    with pytest.raises(DataVersionError, match="data/ exists but no data.dvc versions it") as e:
        prepare(project, GeneratorSpec(scale=SMALL_SCALE), push=False)
    assert "`dvc add data`" in str(e.value) and "`replayml data prepare`" in str(e.value)
    assert "dvc checkout" not in str(e.value) and "make data" not in str(e.value)
    assert sorted(p.relative_to(project) for p in (project / "data").rglob("*")) == before
    assert not (project / "data.dvc").exists()


@pytest.mark.parametrize("configured", [None, "../elsewhere-cache", "ABSOLUTE"])
def test_cache_folder_is_the_one_dvc_uses(tmp_path: Path, configured: str | None) -> None:
    """Reading DVC's merged config gives the object folder DVC itself uses, for the default
    cache, a relative `cache.dir` (relative to the config file) and an absolute one."""
    from dvc.repo import Repo

    from replayml.lineage.data import dvc_cache_dir

    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    if configured is not None:
        value = str(tmp_path / "abs-cache") if configured == "ABSOLUTE" else configured
        dvc(root, "config", "--local", "cache.dir", value)
    with Repo(str(root)) as repo:
        expected = Path(repo.cache.local.path)
    assert dvc_cache_dir(root) == expected
    assert (configured is None) == (expected.is_relative_to(root))


@pytest.mark.parametrize("edge", ["last", "first"])
def test_a_partition_missing_from_the_workspace_is_refused(project: Path, edge: str) -> None:
    """Every file read matches its hash, but a deleted last day moves the relative windows
    and a deleted first day shortens the history: the run would not be the recorded data."""
    days = sorted((project / "data" / "events").glob("date=*"))
    gone = days[-1] if edge == "last" else days[0]
    shutil.rmtree(gone)
    proc = run_train_py(project, "experiment=quick")
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = f"1 of the {len(days)} files of data/events in the data version of data.dvc"
    assert said in proc.stderr
    assert f"data/events/{gone.name}/part-0.parquet" in proc.stderr
    assert "Restore them with `dvc checkout data.dvc`" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all_runs(project) == []
    dvc(project, "checkout", "-q", "data.dvc")
    assert check_config(compose_cfg(project), project)[1] == date(2024, 4, 29)


def test_files_of_a_version_never_pulled_point_at_dvc_pull(project: Path) -> None:
    """data.dvc names a newer version (a teammate added a day) whose files this clone never
    fetched: the error names how many are missing and the pull that brings them."""
    events = project / "data" / "events"
    frame = pd.read_parquet(sorted(events.glob("date=*"))[-1] / "part-0.parquet")
    new_day = events / "date=2024-04-30"
    new_day.mkdir()
    frame.assign(ts=frame["ts"] + pd.Timedelta(days=1)).to_parquet(
        new_day / "part-0.parquet", index=False
    )
    dvc(project, "add", "-q", "data")
    dvc(project, "push", "-q", "data.dvc")
    md5 = load_manifest(dvc_cache_dir(project), read_dvc_file(project / "data.dvc")[0])[
        "events/date=2024-04-30/part-0.parquet"
    ]
    (dvc_cache_dir(project) / md5[:2] / md5[2:]).unlink()  # neither fetched nor checked out
    shutil.rmtree(new_day)
    cfg = compose_cfg(project, ["experiment=quick"])
    with pytest.raises(
        DataVersionError,
        match=r"1 of the 61 files of data/events in the data version of data.dvc \(\w+\.dir\) "
        r"are missing from the workspace: data/events/date=2024-04-30/part-0.parquet .*"
        r"Fetch and restore them with `dvc pull data.dvc` \(or `make data`",
    ):
        check_config(cfg, project)
    dvc(project, "pull", "-q", "data.dvc")
    assert check_config(cfg, project)[1] == date(2024, 4, 30)


def test_a_symlink_dvc_cache_trains(project: Path) -> None:
    # DVC's documented choice for large data: the workspace's files link into the cache
    dvc(project, "config", "cache.type", "symlink", "--local")
    dvc(project, "checkout", "-q", "--relink", "data.dvc")
    assert next((project / "data" / "events").glob("date=*/*.parquet")).is_symlink()
    proc = run_train_py(project, "model.num_boost_round=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    assert run.data.tags["replayml.replayable"] == "true"
