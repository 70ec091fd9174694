"""Code a run imports that neither its commit nor its diff holds makes it not replayable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, all_runs, git, run_train_py
from replayml.replay import compare
from replayml.tracking.read import RecordedRun


def _own_code(project: Path) -> Path:
    """The project runs its own committed src/; returns the feature builders' module."""
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "code")
    return project / "src" / "replayml" / "features" / "builders.py"


def _imports(builders: Path, statement: str) -> None:
    builders.write_text(builders.read_text() + f"\n{statement}\n")


def _trained(project: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = run_train_py(project, "model.num_boost_round=5", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(project)
    return run.data.tags


@pytest.mark.slow
def test_a_run_from_the_project_own_code_stays_replayable(project: Path) -> None:
    _own_code(project)
    tags = _trained(project)
    assert tags["replayml.replayable"] == "true", tags.get("replayml.not_replayable_reasons")


@pytest.mark.slow
def test_a_module_from_pythonpath_makes_the_run_not_replayable(
    project: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "extra_feats.py").write_text("FACTOR = 1.0\n")
    _imports(_own_code(project), "import extra_feats  # noqa")
    tags = _trained(project, env={"PYTHONPATH": str(elsewhere)})
    assert tags["replayml.replayable"] == "false"
    reasons = tags["replayml.not_replayable_reasons"]
    assert f"{(elsewhere / 'extra_feats.py').resolve()} was imported by this run from " in reasons
    assert "outside the git checkout and the Python installation" in reasons
    assert "move it into the repository, or install it as a package pinned in uv.lock" in reasons


@pytest.mark.slow
def test_a_symlink_to_code_outside_the_checkout_makes_the_run_not_replayable(
    project: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere" / "tweak.py"
    target.parent.mkdir()
    target.write_text("FACTOR = 1.0\n")
    builders = _own_code(project)
    (builders.parent / "linked_tweak.py").symlink_to(target)
    _imports(builders, "from replayml.features import linked_tweak  # noqa")
    tags = _trained(project)
    assert tags["replayml.replayable"] == "false"
    reasons = tags["replayml.not_replayable_reasons"]
    assert f"src/replayml/features/linked_tweak.py -> {target.resolve()}" in reasons
    assert "git records only where a link points" in reasons


@pytest.mark.slow
def test_a_module_in_a_nested_git_repository_makes_the_run_not_replayable(
    project: Path,
) -> None:
    builders = _own_code(project)
    vend = project / "src" / "replayml" / "vend"
    vend.mkdir()
    (vend / "__init__.py").write_text("")
    (vend / "helpers.py").write_text("FACTOR = 1.0\n")
    git(vend, "init", "-q")
    git(vend, "add", "-A")
    git(vend, "commit", "-qm", "vendored")
    _imports(builders, "from replayml.vend import helpers  # noqa")
    tags = _trained(project)
    assert tags["replayml.replayable"] == "false"
    reasons = tags["replayml.not_replayable_reasons"]
    assert "src/replayml/vend/helpers.py (in src/replayml/vend/)" in reasons
    assert "a git repository nested in the checkout" in reasons


def _recorded(tags: dict[str, str]) -> RecordedRun:
    return RecordedRun(
        run_id="r", experiment_id="0", experiment_name="e", status="FINISHED", url="",
        tags={f"replayml.{k}": v for k, v in tags.items()},
    )  # fmt: skip


def test_a_slice_hash_difference_of_a_run_on_cached_features_blames_the_cache() -> None:
    same = {"data.dvc_hash": "d1", "slice_hash.valid": "v", "slice_hash.test": "t"}
    replayed = _recorded({**same, "slice_hash.train": "rebuilt"})
    cached = _recorded({**same, "slice_hash.train": "cached", "features_cache": "artifacts/f"})
    (diff,) = [d for d in compare(cached, replayed, [], [], []) if d.group == "data"]
    assert diff.key == "slice_hash.train"
    assert diff.cause.startswith(
        "slice hash of train differs while the DVC hash is the same: the run trained on "
        "cached feature matrices (artifacts/f), which may have been built by other code than "
        "the recorded commit"
    )
    assert "`dvc repro -f features` rebuilds them" in diff.cause
    built = _recorded({**same, "slice_hash.train": "built", "features_cache": ""})
    (diff,) = [d for d in compare(built, replayed, [], [], []) if d.group == "data"]
    assert "cached" not in diff.cause
    assert "the data read differs from the recorded version" in diff.cause


def test_an_ide_debugger_loaded_into_the_run_is_not_its_code(tmp_path: Path) -> None:
    from replayml.lineage.code import unrecorded_modules

    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "empty")
    outside = tmp_path.parent / "elsewhere"
    debugger = [  # VS Code's and PyCharm's debuggers load from their own folders
        "/home/u/.vscode/extensions/ms-python.debugpy/bundled/libs/debugpy/__init__.py",
        "/opt/pycharm/plugins/python/helpers/pydev/pydevd.py",
        "/opt/pycharm/plugins/python/helpers/pydev/_pydevd_bundle/pydevd_comm.py",
    ]
    found = unrecorded_modules(tmp_path, [*debugger, str(outside / "helper.py")])
    assert found.outside == (str(outside / "helper.py"),)  # a plain module still counts
