"""The prestarted interpreter runs a script as `PYTHONPATH=... python SCRIPT ARGS` would."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from replayml.prestart import PrestartedPython

SCRIPT = """
import os, sys
import shadowpkg
print("file", shadowpkg.__file__)
print("argv", sys.argv)
print("cwd", os.getcwd())
print("path0", sys.path[0])
print("env", os.environ["PYTHONPATH"].split(os.pathsep)[0])
raise SystemExit(int(sys.argv[1]))
"""


def _package(where: Path) -> Path:
    (where / "shadowpkg").mkdir(parents=True)
    (where / "shadowpkg" / "__init__.py").write_text("")
    return where


def test_the_job_runs_with_its_own_code_first_on_the_path(tmp_path: Path) -> None:
    installed = _package(tmp_path / "installed")  # what the environment would import
    own = _package(tmp_path / "worktree" / "src")  # what the job must import instead
    script_dir = tmp_path / "worktree"
    (script_dir / "job.py").write_text(SCRIPT)
    (tmp_path / "idle").mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}
    with PrestartedPython(sys.executable, env, tmp_path / "idle") as python:
        done = python.run("job.py", ["3", "--flag"], script_dir, [own], ("shadowpkg",))
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert done.returncode == 3, done.stderr
    assert lines["file"] == str(own / "shadowpkg" / "__init__.py")
    assert lines["argv"] == "['job.py', '3', '--flag']"
    assert lines["cwd"] == str(script_dir)
    assert lines["path0"] == str(script_dir)
    assert lines["env"] == str(own)  # children see the same path


def test_a_job_whose_code_was_imported_early_is_refused(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("print('ran')\n")
    with PrestartedPython(sys.executable, dict(os.environ), tmp_path) as python:
        # `json` is imported by the interpreter before any job: it must not be the job's code
        done = python.run("job.py", [], tmp_path, [], ("json",))
    assert done.returncode == 97
    assert "json" in done.stderr and "ran" not in done.stdout


def test_an_unused_interpreter_is_stopped(tmp_path: Path) -> None:
    python = PrestartedPython(sys.executable, dict(os.environ), tmp_path)
    python.close()
    assert python.proc.poll() is not None
    python.close()  # idempotent


def test_safe_path_mode_keeps_the_path_as_python_would(tmp_path: Path) -> None:
    """With PYTHONSAFEPATH neither `python -c` nor `python SCRIPT` adds a folder of its own:
    the job's code comes first, and nothing of the environment's path is dropped."""
    installed = _package(tmp_path / "installed")
    own = _package(tmp_path / "worktree" / "src")
    script_dir = tmp_path / "worktree"
    (script_dir / "job.py").write_text(
        "import sys, shadowpkg\nprint(shadowpkg.__file__)\nprint(repr(sys.path[:2]))\n"
    )
    (tmp_path / "idle").mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONSAFEPATH": "1"}
    with PrestartedPython(sys.executable, env, tmp_path / "idle") as python:
        done = python.run("job.py", [], script_dir, [own], ("shadowpkg",))
    assert done.returncode == 0, done.stderr
    file, head = done.stdout.splitlines()
    assert file == str(own / "shadowpkg" / "__init__.py")
    assert head == repr([str(own), str(installed)])
