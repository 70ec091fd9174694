"""Find runs left RUNNING by a process that died (SIGKILL, power loss) and mark them KILLED.

MLflow has no heartbeat: a killed process leaves its run RUNNING forever. Every replayml run
records its host and pid and refreshes a heartbeat tag while it runs; a RUNNING run whose
process is gone (same host) or whose heartbeat is stale (other hosts) is a ghost.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from replayml.tracking.run import TAG_PREFIX, pid_space, process_start
from replayml.tracking.store import StoreSpec, explain, open_experiment, run_url


@dataclass(frozen=True)
class Ghost:
    """A RUNNING run whose process is not alive, and why we think so."""

    run_id: str
    url: str
    reason: str


def process_alive(pid: int, since: float | None = None, started: float | None = None) -> bool:
    """Whether process `pid` runs and is the one recorded: the process that started at
    `started` (`process_start`, the same clock), or for records without it, one already
    running at `since` (wall-clock seconds). A pid reused by a later process is not the run's."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is not None:
        now = process_start(pid)
        return now is None or abs(now - started) < 1.0  # cannot tell: a live process wins
    if since is None:
        return True
    import psutil

    try:
        return bool(psutil.Process(pid).create_time() <= since + 1.0)
    except psutil.Error:
        return True  # cannot tell: a live process wins


def find_ghosts(
    spec: StoreSpec, stale_after: float, parent_run_id: str | None = None
) -> list[Ghost]:
    """RUNNING runs whose process is gone (this host) or whose heartbeat is older than
    `stale_after` seconds."""
    client, _ = open_experiment(spec)
    host = socket.gethostname()
    own_space = pid_space()
    now = time.time()
    ghosts = []
    try:
        exps = [e.experiment_id for e in client.search_experiments()]
        query = "attributes.status = 'RUNNING'"
        if parent_run_id:
            query += f" and tags.mlflow.parentRunId = '{parent_run_id}'"
        runs = client.search_runs(exps, filter_string=query)
    except Exception as exc:
        raise explain(exc, spec) from exc
    for run in runs:
        tags = run.data.tags
        beat = float(tags.get(TAG_PREFIX + "heartbeat", run.info.start_time / 1000))
        pid = tags.get(TAG_PREFIX + "pid")
        reason = ""
        # this host, seen from the same pid namespace: its process decides (a run recorded
        # before pid spaces were recorded has none: the host name alone decides)
        space = tags.get(TAG_PREFIX + "pid_space")
        here = tags.get(TAG_PREFIX + "host") == host and space in (None, "", own_space)
        if here and pid:
            # the recorded process, or (older records) one that started before the run did:
            # a later one has reused its pid
            recorded = tags.get(TAG_PREFIX + "pid_started")
            started = float(recorded) if recorded else None
            if not process_alive(int(pid), since=run.info.start_time / 1000, started=started):
                reason = f"process {pid} on {host} is gone"
        elif now - beat > stale_after:
            reason = f"no heartbeat for {int(now - beat)} s (limit {int(stale_after)} s)"
        if reason:
            url = run_url(spec, run.info.experiment_id, run.info.run_id)
            ghosts.append(Ghost(run.info.run_id, url, reason))
    return ghosts


def mark_killed(spec: StoreSpec, ghosts: list[Ghost]) -> None:
    """Mark each ghost KILLED, with the reason as a tag."""
    client, _ = open_experiment(spec)
    for g in ghosts:
        client.set_tag(g.run_id, TAG_PREFIX + "doctor", f"marked KILLED: {g.reason}")
        client.set_terminated(g.run_id, "KILLED")
