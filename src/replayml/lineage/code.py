"""The code version of a run: git commit, branch, dirty flag and the uncommitted diff."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from replayml.errors import DirtyTreeError


@dataclass(frozen=True)
class CodeVersion:
    """Git state of the project at the start of a run."""

    commit: str
    branch: str
    dirty: bool
    diff: str  # `git diff HEAD` plus untracked files as a patch; "" when clean

    @property
    def available(self) -> bool:
        return bool(self.commit)


def _git(root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        raise DirtyTreeError(f"`git {' '.join(args)}` failed in {root}: {proc.stderr.strip()}")
    return proc.stdout


def code_version(root: Path) -> CodeVersion:
    """Read the git state of `root`; outside a git repo, an empty (unavailable) version."""
    probe = subprocess.run(
        ["git", "rev-parse", "--verify", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return CodeVersion(commit="", branch="", dirty=False, diff="")
    commit = probe.stdout.strip()
    project = root.resolve()
    # paths in the diff are relative to the repository's top, wherever the project sits in it
    root = Path(_git(root, "rev-parse", "--show-toplevel").strip())
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD").strip()
    # what a DVC pipeline writes (its outputs, dvc.lock) is not code: `dvc repro` deletes a
    # stage's outputs before running it, which would make every pipeline run look dirty
    prefix = (
        project.relative_to(root.resolve()) if project.is_relative_to(root.resolve()) else None
    )
    skip = [f":(exclude){prefix / out}" for out in pipeline_outputs(project)] if prefix else []
    spec = ["--", ".", *skip] if skip else []
    diff = _git(root, "diff", "HEAD", "--binary", *spec)
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", *spec).split("\0")
    for rel in sorted(p for p in untracked if p):
        diff += _git(root, "diff", "--binary", "--no-index", "/dev/null", rel, ok=(0, 1))
    return CodeVersion(commit=commit, branch=branch, dirty=bool(diff), diff=diff)


def pipeline_outputs(project: Path) -> list[str]:
    """The paths the project's DVC pipeline writes (`dvc.yaml` outs, metrics and plots of every
    stage, and `dvc.lock`), relative to the project; empty without a `dvc.yaml`."""
    import yaml

    path = project / "dvc.yaml"
    if not path.is_file():
        return []
    try:
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError:
        return []
    found = ["dvc.lock"]
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in (stage or {}).get(kind) or []:
                out = next(iter(entry)) if isinstance(entry, dict) else entry
                if isinstance(out, str) and "${" not in out:
                    found.append(out)
    return found
