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
    # paths in the diff are relative to the repository's top, wherever the project sits in it
    root = Path(_git(root, "rev-parse", "--show-toplevel").strip())
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD").strip()
    diff = _git(root, "diff", "HEAD", "--binary")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    for rel in sorted(p for p in untracked if p):
        diff += _git(root, "diff", "--binary", "--no-index", "/dev/null", rel, ok=(0, 1))
    return CodeVersion(commit=commit, branch=branch, dirty=bool(diff), diff=diff)
