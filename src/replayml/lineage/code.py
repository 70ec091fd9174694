"""The code version of a run: git commit, branch, dirty flag and the uncommitted diff."""

from __future__ import annotations

import os
import re
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
#: diff tool, textconv filters, colour, `diff.noprefix`, `diff.relative`, `diff.context`)
PATCH_OPTIONS = (
    "--no-ext-diff", "--no-textconv", "--no-color", "--no-relative", "--binary",
    "--src-prefix=a/", "--dst-prefix=b/", "--unified=3",
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


#: files that are never code, wherever they are: logs and captured output a shell redirects
#: into the checkout (`> train.log`, `nohup`, `> run.out`)
NOT_CODE = ("**/*.log", "**/*.out")


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


def ignored_modules(root: Path, files: list[Path], top: Path | None = None) -> list[str]:
    """Those of `files` (imported Python modules) that sit in the git checkout at `root` (whose
    top is `top` when known) but are ignored by git: their code is in no commit and no diff."""
    if top is None:
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


def python_installation(top: Path) -> tuple[str, ...]:
    """The folders of the running Python installation, each ending with a separator, as given
    and resolved: its prefixes (the venv's and the base interpreter's, stdlib included) and
    their library paths, but none that holds the checkout at `top` (a project in /usr/src
    with Python in /usr). Code imported from there is the environment's, pinned by the lock."""
    import sys
    import sysconfig

    roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    for paths in (sysconfig.get_paths(), sysconfig.get_paths(vars=base)):
        roots |= {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    found = {os.path.abspath(r) for r in roots if r} | {os.path.realpath(r) for r in roots if r}
    found = {r.rstrip(os.sep) + os.sep for r in found}
    return tuple(sorted(r for r in found if not (str(top) + os.sep).startswith(r)))


#: tools that load themselves into the process from their own folders (an IDE's debugger,
#: a profiler): they observe the run, they are not its code
_TOOLING = re.compile(r"[/\\](debugpy|pydevd[^/\\]*|_pydevd?_[^/\\]*|pydev)[/\\]|pydevd")


def _installed(path: str, installation: tuple[str, ...]) -> bool:
    return (
        path.startswith(installation)
        or "site-packages" in path
        or "dist-packages" in path
        or bool(_TOOLING.search(path))
    )


@dataclass(frozen=True)
class UnrecordedModules:
    """Imported modules whose code neither the commit nor the diff of the checkout holds."""

    #: modules in the checkout that git ignores, relative to the git top
    ignored: tuple[str, ...] = ()
    #: absolute paths of modules from outside the checkout and the Python installation
    outside: tuple[str, ...] = ()
    #: (link in the checkout, relative to the git top; the file outside it the link leads to)
    linked: tuple[tuple[str, str], ...] = ()
    #: (module, its git repository inside the checkout), both relative to the git top
    nested: tuple[tuple[str, str], ...] = ()


def unrecorded_modules(
    root: Path, files: list[str], exempt: tuple[Path, ...] = ()
) -> UnrecordedModules:
    """Those of `files` (the `__file__` of imported modules, as imported) whose code the run's
    commit and diff do not hold: ignored by git, imported from outside the git checkout at
    `root` and the Python installation (`PYTHONPATH`), through a symlink in the checkout to a
    file outside it (git records only the link), or from a git repository nested in the
    checkout (git records only its folder or commit id). `exempt`: folders whose code is
    accounted for otherwise (replayml's own package run from another checkout). Cheap: string
    tests set the installation's modules aside before any file system call."""
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip()).resolve()
    installation = python_installation(top)
    exempt = tuple(p.resolve() for p in exempt)
    inside, outside, linked, nested = [], [], [], []
    repo_of: dict[Path, Path] = {}  # folder -> the git top holding it, for folders in `top`

    def repository(folder: Path) -> Path:
        if folder not in repo_of:
            repo_of[folder] = (
                top if folder == top or not folder.is_relative_to(top)
                else folder if (folder / ".git").exists()
                else repository(folder.parent)
            )  # fmt: skip
        return repo_of[folder]

    paths = {os.path.abspath(f) for f in files}
    for file in sorted(p for p in paths if not _installed(p, installation)):
        path = Path(file)
        real = path.resolve()
        if real.is_relative_to(top):
            inside.append(real)
            repo = repository(real.parent)
            if repo != top:
                nested.append((str(real.relative_to(top)), str(repo.relative_to(top))))
            continue
        if _installed(str(real), installation) or any(real.is_relative_to(e) for e in exempt):
            continue  # a link to the installation's code, or code accounted for otherwise
        # reached through a symlink in the checkout (the link itself, or a linked folder)?
        link = next(
            (
                a for a in reversed([path, *path.parents])
                if a.is_symlink() and a.parent.resolve().is_relative_to(top)
            ),
            None,
        )  # fmt: skip
        if link is not None:
            linked.append((str((link.parent.resolve() / link.name).relative_to(top)), str(real)))
        else:
            outside.append(str(real))
    in_top = [f for f in inside if repository(f.parent) == top]
    ignored = ignored_modules(root, in_top, top=top)
    return UnrecordedModules(tuple(ignored), tuple(outside), tuple(linked), tuple(nested))


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
