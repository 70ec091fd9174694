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
    #: the untracked files in `diff` with their sizes in bytes (path relative to the git top)
    untracked: tuple[tuple[str, int], ...] = ()

    @property
    def available(self) -> bool:
        return bool(self.commit)


def _git(root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        raise DirtyTreeError(f"`git {' '.join(args)}` failed in {root}: {proc.stderr.strip()}")
    return proc.stdout


#: a patch `git apply` takes, whatever the user's git config says about diffs (an external
#: diff tool, textconv filters, colour, `diff.noprefix`, `diff.relative`)
PATCH_OPTIONS = (
    "--no-ext-diff", "--no-textconv", "--no-color", "--no-relative", "--binary",
    "--src-prefix=a/", "--dst-prefix=b/",
)  # fmt: skip


def _patch(root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    """`git diff` output as a patch, byte for byte: line endings (CRLF) kept, bytes that are
    not UTF-8 carried as surrogates (`encode("utf-8", "surrogateescape")` gives them back)."""
    cmd = ["git", "diff", *PATCH_OPTIONS, *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, check=False)
    if proc.returncode not in ok:
        raise DirtyTreeError(
            f"`{' '.join(cmd)}` failed in {root}: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout.decode("utf-8", "surrogateescape")


#: files that are never code, wherever they are (logs a shell redirects into the checkout)
NOT_CODE = ("**/*.log", "**/nohup.out")


def code_version(root: Path, exclude: list[Path] | None = None) -> CodeVersion:
    """Read the git state of `root`; outside a git repo, an empty (unavailable) version.
    `exclude`: folders that are not code (a run's own store or output folder)."""
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
    top = root.resolve()
    for folder in exclude or []:
        folder = folder.resolve()
        if folder.is_relative_to(top) and folder != top:
            skip.append(f":(exclude){folder.relative_to(top)}")
    # a log the user's shell writes while the run runs (`python train.py > train.log`) is not
    # code: it would make every run dirty, each with another partial copy of the log
    skip += [f":(exclude,glob){pattern}" for pattern in NOT_CODE]
    spec = ["--", ".", *skip]
    diff = _patch(root, "HEAD", *spec)
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", *spec).split("\0")
    sizes = []
    for rel in sorted(p for p in untracked if p):
        diff += _patch(root, "--no-index", "/dev/null", rel, ok=(0, 1))
        sizes.append((rel, (root / rel).stat().st_size if (root / rel).is_file() else 0))
    return CodeVersion(
        commit=commit, branch=branch, dirty=bool(diff), diff=diff, untracked=tuple(sizes)
    )


#: untracked files larger than this in all are more likely data than code: said when recorded
UNTRACKED_WARN_BYTES = 1_000_000


def untracked_bulk(code: CodeVersion) -> str:
    """A warning when the untracked files a run records as code weigh more than
    `UNTRACKED_WARN_BYTES` (data left in the checkout, logs); "" otherwise."""
    total = sum(size for _, size in code.untracked)
    if total <= UNTRACKED_WARN_BYTES:
        return ""
    biggest = sorted(code.untracked, key=lambda item: -item[1])[:3]
    named = ", ".join(f"{path} ({size / 1e6:.1f} MB)" for path, size in biggest)
    return (
        f"{len(code.untracked)} untracked file(s) of {total / 1e6:.1f} MB in all (e.g. {named}) "
        f"are recorded as code in this run's diff (replayml/code.diff) and make it dirty; if "
        f"they are data or output, add them to .gitignore (or version them with `dvc add`)"
    )


def ignored_modules(root: Path, files: list[Path]) -> list[str]:
    """Those of `files` (imported Python modules) that sit in the git checkout at `root` but
    are ignored by git: their code is in no commit and no diff."""
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip()).resolve()
    inside = sorted(
        str(f.relative_to(top))
        for f in files
        if f.is_relative_to(top) and not {".venv", "site-packages", "dist-packages"} & set(f.parts)
    )
    if not inside:
        return []
    proc = subprocess.run(
        ["git", "check-ignore", "--stdin"], cwd=top, input="\n".join(inside),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [line for line in proc.stdout.splitlines() if line.strip()]


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


def python_files(root: Path) -> dict[str, str]:
    """sha256 of every Python file git sees in the checkout at `root` (tracked, or untracked
    and not ignored), by path; what a run could still import while it runs."""
    import hashlib

    probe = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z", "--", "*.py"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return {}
    out = {}
    for rel in (p for p in probe.stdout.split("\0") if p):
        path = root / rel
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "deleted"
    return out
