"""Whether others can replay a run: its commit on a git remote, its data version in the DVC
remote.

A run records its commit and data version; a teammate's clone can rebuild it only when both
left this machine. A project without any git remote (or DVC remote) has nobody to share with,
so nothing is checked there.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


TAG_ON_REMOTE = "replayml.code.on_remote"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class Shared:
    """One part of a run (code or data) as others can reach it."""

    shared: bool | None  # None: nothing to share with, or it could not be checked
    where: str  # the remote branches or the DVC remote that hold it; else why not


def git_remotes(root: Path) -> list[str]:
    """The repository's git remotes (empty outside a repository)."""
    return _git(root, "remote").stdout.split()


#: how long `git ls-remote` may take when a command asks the remote itself (register)
LS_REMOTE_TIMEOUT = 15.0


def _remote_tip(root: Path, remotes: list[str], commit: str) -> str:
    """The first ref of a git remote whose tip is `commit` ("" when none is, or the remote
    cannot be asked without a prompt within `LS_REMOTE_TIMEOUT`)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
    for remote in remotes:
        try:
            listed = subprocess.run(
                ["git", "ls-remote", remote], cwd=root, capture_output=True, text=True,
                check=False, timeout=LS_REMOTE_TIMEOUT, env=env,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            continue
        for line in listed.stdout.splitlines():
            sha, _, ref = line.partition("\t")
            if sha == commit and ref != "HEAD":
                return f"{remote} {ref}"
    return ""


def commit_on_remote(root: Path, commit: str, ask_remote: bool = False) -> Shared:
    """Whether `commit` is on a remote-tracking branch of `root`'s repository (as of the last
    fetch or push). A shallow clone (CI) cannot tell: unknown, unless `ask_remote`, which also
    accepts a commit that is the tip of any ref on a remote (`git ls-remote`: a pull request's
    head fetched by its SHA)."""
    remotes = git_remotes(root)
    if not remotes or not commit:
        return Shared(None, "the repository has no git remote")
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return Shared(False, f"commit {commit[:12]} is not in the repository at {root}")
    contains = _git(root, "branch", "-r", "--contains", commit, "--format=%(refname:short)")
    branches = [b for b in contains.stdout.split() if not b.endswith("/HEAD")]
    if branches:
        return Shared(True, ", ".join(branches[:3]) + (", …" if len(branches) > 3 else ""))
    tip = _remote_tip(root, remotes, commit) if ask_remote else ""
    if tip:
        return Shared(True, tip)
    shallow = _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    if shallow and not ask_remote:
        return Shared(None, f"this shallow clone's remote-tracking branches do not show "
                            f"whether commit {commit[:12]} was pushed")  # fmt: skip
    return Shared(False, f"commit {commit[:12]} is on no branch of the git remote(s) "
                         f"{', '.join(remotes)}")  # fmt: skip


def data_in_remote(root: Path, dvc_hash: str) -> Shared:
    """Whether the DVC remote (the default one) holds data version `dvc_hash` (a `.dir` hash)."""
    if not dvc_hash:
        return Shared(None, "the run's data is not tracked by DVC")
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            name = repo.config["core"].get("remote")
            if not name:
                return Shared(None, "the DVC project has no default remote")
            odb = repo.cloud.get_remote_odb(name)
            url = str(repo.config["remote"][name].get("url", ""))
            found = odb.exists(dvc_hash)
    except Exception as exc:  # an unreachable remote is reported, not fatal
        return Shared(None, f"the DVC remote could not be checked ({type(exc).__name__}: {exc})")
    from replayml.redact import redact_text

    remote = f"{name} ({redact_text(url)})"
    if found and _inside(root, url):
        return Shared(None, f"the DVC remote {remote} {IN_CHECKOUT}")
    if found:
        return Shared(True, f"DVC remote {remote}")
    return Shared(False, f"the DVC remote {remote} has no copy of data version {dvc_hash}")


#: a local-folder DVC remote inside the checkout (the default `.dvc-remote/`) holds data
#: for this clone only
IN_CHECKOUT = (
    "is a folder inside this checkout, which clones elsewhere cannot read: set a shared "
    "remote (`dvc remote add -d team <url>`, commit .dvc/config, `dvc push`)"
)


def _inside(root: Path, url: str) -> bool:
    """Whether a DVC remote's `url` is a local folder inside the checkout at `root`."""
    if "://" in url and not url.startswith("file://"):
        return False
    folder = Path(url.removeprefix("file://"))
    if not folder.is_absolute():  # relative to .dvc/, where DVC's config lives
        folder = root / ".dvc" / folder
    return folder.resolve().is_relative_to(root.resolve())


def sharing_gaps(
    root: Path, commit: str, branch: str, dvc_hash: str, dvc_file: str, on_remote: str = ""
) -> list[str]:
    """What stops others from replaying a run of commit `commit` on data `dvc_hash`, each with
    its fix (empty when nothing does, or nothing could be checked). `on_remote` is what the
    run recorded when it trained (`replayml.code.on_remote`): it decides when this clone does
    not have the commit and so cannot check it now."""
    gaps, unknown = sharing_report(root, commit, branch, dvc_hash, dvc_file, on_remote)
    if unknown and unknown[0].startswith(NOT_HERE):
        log.warning(
            "not checked whether others can fetch the run's commit and data: %s (run the "
            "command in a clone of the run's project, or pass --project)",
            unknown[0],
        )
    for said in unknown:
        if said.endswith(IN_CHECKOUT):
            log.warning("others cannot replay this run's data: %s", said)
    return gaps


NOT_HERE = "the git repository at"


def sharing_report(
    root: Path, commit: str, branch: str, dvc_hash: str, dvc_file: str, on_remote: str = ""
) -> tuple[list[str], list[str]]:
    """`sharing_gaps`, and what could not be checked (no remote, a commit this clone does not
    have, an unreachable DVC remote), each said in a phrase."""
    gaps: list[str] = []
    unknown: list[str] = []
    here = bool(commit) and _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
    if not here and on_remote != "false":
        # not the run's project: its DVC remote says nothing about the run's data
        return gaps, [f"{NOT_HERE} {root} does not have commit {commit[:12] or '(none)'}"]
    if not here:  # the author's unpushed commit; the data is checked too, to name both now
        gaps.append(
            f"commit {commit[:12]} was on no branch of the git remote when the run trained "
            f"({TAG_ON_REMOTE}=false) and the git repository at {root} does not have it: "
            f"nobody but its author can replay the run; push it from the clone that "
            f"trained it (`git push origin <branch>`), or register from that clone"
        )
    else:
        code = commit_on_remote(root, commit, ask_remote=True)
        if code.shared is False:
            remote = (git_remotes(root) or ["origin"])[0]
            target = branch if branch and branch != "HEAD" else "<branch>"
            gaps.append(
                f"{code.where}: only clones that have it can replay the run; push it "
                f"(`git push {remote} {target}`, or push a branch or tag that contains it)"
            )
        elif code.shared is None:
            unknown.append(code.where)
    data = data_in_remote(root, dvc_hash)
    if data.shared is False:
        gaps.append(
            f"{data.where}: only machines whose DVC cache has it can replay the run; push it "
            f"from one of them (`dvc push {dvc_file or 'data.dvc'}` with that version checked out)"
        )
    elif data.shared is None:
        unknown.append(data.where)
    return gaps, unknown
