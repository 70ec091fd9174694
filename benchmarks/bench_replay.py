"""Benchmark 6: `replayml replay RUN` vs the original `python train.py` run it replays.

Everything runs in a throwaway clone of the project (`_clone.py`). Each repeat trains one
original run (`python train.py`, default config, its own copy of an initialised temporary
SQLite store) and then replays it twice, in a rotating order: (a) with the clone's HEAD at the
run's commit, and (b) with HEAD at a newer commit that changes a default
(`conf/model/lgbm.yaml` learning_rate), so the run's commit is an older one. A replay always
checks the run's commit out in a temporary git worktree and materialises the run's data version
there from the DVC cache; (b) shows what an older commit adds on top of (a). Targets: (a) at
most 1.2x the original's wall time, and every replay's verdict IDENTICAL (exit status 0).
A reference pair (another original and its replay (a)) reads bytecode compiled once before the
run (`_clone.compile_bytecode`): the venv has none, so each process compiles what it imports.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from _clone import VENV_BIN, Clone, compile_bytecode, make_clone, run_id_of, steps_of
from _common import (
    PYTHON,
    Check,
    Options,
    Report,
    StoreFactory,
    median,
    parse_options,
    progress,
    ratio,
    require_data,
    rotated,
    samples_cell,
    secs,
    sqlite_uri,
    table,
    temp_dir,
    timed,
)

NAME = "replay"
TARGET = 1.2
DEFAULT_FILE = "conf/model/lgbm.yaml"
DEFAULT_LINE = re.compile(r"^learning_rate: *(?P<value>[0-9.]+)", re.M)
VERDICT_LINE = re.compile(r"replay of run [0-9a-f]+: (?P<verdict>[A-Z_]+)")
ORIGINAL = "original"
SAME = "same"
OLDER = "older"
ORIG_PYC = "original-pyc"
SAME_PYC = "same-pyc"
NEWER_BRANCH = "bench-newer-default"
LABELS = {
    ORIGINAL: "`python train.py` (the original run, default config)",
    SAME: "(a) `replayml replay RUN`, HEAD = the run's commit",
    OLDER: "(b) `replayml replay RUN`, HEAD = a newer commit",
    ORIG_PYC: "`python train.py`, bytecode compiled (reference)",
    SAME_PYC: "(a) `replayml replay RUN`, bytecode compiled (reference)",
}
SHORT = {
    ORIGINAL: "original train.py",
    SAME: "(a) replay",
    OLDER: "(b) replay",
    ORIG_PYC: "train.py, bytecode",
    SAME_PYC: "(a) replay, bytecode",
}
OTHER = {
    ORIGINAL: "other (interpreter, imports, preprocessing, scoring, plots, artifacts)",
    SAME: "other (CLI start, run lookup, git worktree add/remove, comparing, tagging)",
}


def _newer_commit(clone: Clone) -> tuple[str, str, str]:
    """Commit a changed default learning_rate on a side branch; (branch, commit, change)."""
    branch = clone.git("rev-parse", "--abbrev-ref", "HEAD")
    path = clone.root / DEFAULT_FILE
    text = path.read_text()
    m = DEFAULT_LINE.search(text)
    if not m:
        raise RuntimeError(f"no `learning_rate:` line in {DEFAULT_FILE} to change")
    old = m["value"]
    new = "0.08" if old != "0.08" else "0.1"
    clone.git("checkout", "-q", "-b", NEWER_BRANCH)
    path.write_text(text[: m.start()] + f"learning_rate: {new}" + text[m.end() :])
    commit = clone.commit_all(f"bench: default learning_rate {old} -> {new}")
    clone.git("checkout", "-q", branch)
    return branch, commit, f"{DEFAULT_FILE}: learning_rate {old} → {new}"


def _replay(
    clone: Clone, run_id: str, uri: str, pycache: Path | None
) -> tuple[float, str, int, str]:
    """Wall time, verdict, exit status and log of `replayml replay RUN -v`."""
    cmd = [
        str(VENV_BIN / "replayml"),
        "replay",
        run_id,
        "--project",
        str(clone.root),
        "--tracking-uri",
        uri,
        "-v",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=clone.root,
        env=clone.env(uri, pycache),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    m = VERDICT_LINE.search(proc.stdout)
    if m is None:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-25:])
        raise RuntimeError(
            f"replay of {run_id} printed no verdict (exit {proc.returncode}):\n{tail}"
        )
    return seconds, m["verdict"], proc.returncode, proc.stdout + proc.stderr


def run(opts: Options) -> Report:
    """Per repeat: an original run and its two replays (rotating order), and the reference pair
    with compiled bytecode; the two groups in a rotating order."""
    wall: dict[str, list[float]] = defaultdict(list)
    steps: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in LABELS}
    verdicts: dict[str, list[str]] = defaultdict(list)
    problems: list[str] = []
    with temp_dir(NAME) as tmp:
        clone = make_clone(tmp)
        run_commit = clone.head()
        branch, newer, change = _newer_commit(clone)
        heads = {SAME: branch, OLDER: NEWER_BRANCH, SAME_PYC: branch}
        pycache = tmp / "pycache"
        compile_bytecode(pycache)
        stores = StoreFactory(tmp / "stores")

        def original(name: str, pyc: Path | None) -> tuple[str, str]:
            clone.git("checkout", "-q", branch)
            folder = stores.new(name)
            uri = sqlite_uri(folder / "mlflow.db")
            cmd = [
                PYTHON,
                "train.py",
                f"tracking.uri={uri}",
                f"output_dir={folder / 'out'}",
                f"hydra.run.dir={folder / 'hydra'}",
            ]
            seconds, proc = timed(cmd, cwd=clone.root, env=clone.env(uri, pyc), what="train.py")
            wall[name].append(seconds)
            _add_steps(steps[name], proc.stderr + proc.stdout, seconds, OTHER[ORIGINAL])
            if clone.dirty():
                raise RuntimeError(f"the clone is dirty after train.py: {clone.dirty()}")
            return run_id_of(proc.stdout), uri

        def replay(name: str, run_id: str, uri: str, pyc: Path | None) -> None:
            clone.git("checkout", "-q", heads[name])
            head = clone.head()
            if (head == run_commit) != (name != OLDER):
                raise RuntimeError(f"HEAD {head[:12]} is wrong for replay {name}")
            seconds, verdict, code, log = _replay(clone, run_id, uri, pyc)
            wall[name].append(seconds)
            verdicts[name].append(f"{verdict} (exit {code})")
            _add_steps(steps[name], log, seconds, OTHER[SAME])
            if verdict != "IDENTICAL" or code != 0:
                problems.append(f"{LABELS[name]}: {verdict} (exit {code}):\n{log[-3000:]}")

        for r in range(opts.repeats):
            for group in rotated(["project venv", "bytecode compiled"], r):
                progress(f"{NAME}: repeat {r + 1}/{opts.repeats}: {group}: original + replay(s)")
                if group == "project venv":
                    run_id, uri = original(ORIGINAL, None)
                    for name in rotated([SAME, OLDER], r):
                        replay(name, run_id, uri, None)
                else:
                    run_id, uri = original(ORIG_PYC, pycache)
                    replay(SAME_PYC, run_id, uri, pycache)
            clone.git("checkout", "-q", branch)
    for p in problems:
        print(p, file=sys.stderr)
    return _report(opts, wall, steps, verdicts, run_commit, newer, change)


def _add_steps(into: dict[str, list[float]], log: str, wall: float, other: str) -> None:
    found = steps_of(log)
    for step, value in found.items():
        into[step].append(value)
    into[other].append(wall - sum(found.values()))


def _report(
    opts: Options,
    wall: dict[str, list[float]],
    steps: dict[str, dict[str, list[float]]],
    verdicts: dict[str, list[str]],
    run_commit: str,
    newer: str,
    change: str,
) -> Report:
    orig = median(wall[ORIGINAL])
    same = median(wall[SAME])
    older = median(wall[OLDER])
    orig_pyc = median(wall[ORIG_PYC])
    same_pyc = median(wall[SAME_PYC])
    base = {SAME_PYC: ORIG_PYC}
    rows = []
    for name in LABELS:
        v = median(wall[name])
        against = base.get(name, ORIGINAL)
        rows.append(
            [
                LABELS[name],
                secs(v),
                f"{ratio(v / median(wall[against]))} ({SHORT[against]})",
                ", ".join(sorted(set(verdicts[name]))) or "(trains the run)",
                samples_cell(wall[name]),
            ]
        )
    main = table(["command", "median wall", "ratio (baseline)", "verdict", "samples (s)"], rows)
    step_rows = []
    for name in (ORIGINAL, SAME, OLDER, ORIG_PYC, SAME_PYC):
        total = median(wall[name])
        for step, values in steps[name].items():
            step_rows.append(
                [
                    SHORT[name],
                    step,
                    secs(median(values)),
                    f"{median(values) / total:.0%}",
                ]
            )
    step_table = table(["command", "step (from its log)", "median", "share of wall"], step_rows)
    restore = "restoring the run's data version"
    overhead = older - same
    restore_same = median(steps[SAME].get(restore, [0.0]))
    restore_older = median(steps[OLDER].get(restore, [0.0]))
    notes = (
        f"Throwaway clone of the project, private copy of the DVC cache. The original runs "
        f"once per repeat ({opts.repeats} in all), each into its own copy of an initialised "
        f"temporary SQLite store, at commit {run_commit[:12]}; its two replays follow in a "
        f"rotating order and log into the same store. (b) checks out a side branch whose commit "
        f"{newer[:12]} changes {change}, so HEAD ≠ the run's commit. Both replays build a "
        f"temporary git worktree at {run_commit[:12]} and materialise the data version there "
        f"(restoring: (a) {secs(restore_same)}, (b) {secs(restore_older)}); the replay's "
        f"`train.py` runs in a subprocess inside the worktree (the 'training with the run's "
        f"code' step covers that whole subprocess: interpreter, imports, store, training, "
        f"logging). The overhead of (b) over (a) is {overhead:+.2f} s (median difference; "
        f"within noise when both take the same path).\n\n"
        f"Bytecode: `make install` compiles the venv (`uv sync --compile-bytecode`); the "
        f"reference row runs the same commands reading bytecode compiled once into a private "
        f"PYTHONPYCACHEPREFIX, which also covers the standard library and a venv installed "
        f"without compiling."
    )
    same_ok = all(v.startswith("IDENTICAL (exit 0)") for v in verdicts[SAME])
    older_ok = all(v.startswith("IDENTICAL (exit 0)") for v in verdicts[OLDER])
    pyc_ok = all(v.startswith("IDENTICAL (exit 0)") for v in verdicts[SAME_PYC])
    checks = [
        Check(
            NAME,
            f"(a) replay at the run's commit vs original (original once per repeat, "
            f"{opts.repeats}×)",
            f"≤ {TARGET:.2f}×",
            f"{ratio(same / orig)} ({secs(same)} vs {secs(orig)})",
            same / orig <= TARGET and same_ok,
        ),
        Check(
            NAME,
            "replay verdicts, (a), (b) and the bytecode reference",
            "all IDENTICAL (exit 0)",
            f"(a) {', '.join(verdicts[SAME])}; (b) {', '.join(verdicts[OLDER])}; "
            f"reference {', '.join(verdicts[SAME_PYC])}",
            same_ok and older_ok and pyc_ok,
        ),
        Check(
            NAME,
            "(b) replay at an older commit: overhead over (a)",
            "none (info)",
            f"{overhead:+.2f} s ({secs(older)} vs {secs(same)}; "
            f"data restore {secs(restore_older)} vs {secs(restore_same)})",
            None if older_ok else False,
        ),
        Check(
            NAME,
            "(a) vs original, both with compiled bytecode (reference)",
            "none (info)",
            f"{ratio(same_pyc / orig_pyc)} ({secs(same_pyc)} vs {secs(orig_pyc)})",
            None if pyc_ok else False,
        ),
    ]
    return Report(
        "6. Replay: `replayml replay RUN` vs the original `python train.py`",
        [main, step_table, notes],
        checks,
    )


def main(argv: list[str] | None = None) -> None:
    """Standalone: `python benchmarks/bench_replay.py [--repeats N | --quick]`."""
    args = parse_options(argv, __doc__.splitlines()[0])
    require_data()
    print(run(Options(repeats=args.repeats)).markdown())


if __name__ == "__main__":
    sys.exit(main())
