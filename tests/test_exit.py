"""Commands end with their exit status and output intact, without the interpreter teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys
from replayml.entry import exit_now
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
print("unterminated output", end="")
exit_now({code})
print("never")
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(code=code)], capture_output=True, text=True
    )


def test_exit_now_keeps_status_output_and_exit_handlers() -> None:
    done = _run("3")
    assert done.returncode == 3
    assert done.stdout == "unterminated output"  # flushed, and nothing after exit_now
    assert "exit handler ran" in done.stderr
    assert _run("None").returncode == 0
    message = _run("'bad input: fix it'")
    assert message.returncode == 1 and "bad input: fix it" in message.stderr


def test_exit_now_lets_started_work_finish_first(tmp_path: Path) -> None:
    """Like a normal exit, a thread pool's pending task and a non-daemon thread complete."""
    done_pool, done_thread = tmp_path / "pool", tmp_path / "thread"
    script = f"""
import threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from replayml.entry import exit_now
pool = ThreadPoolExecutor(1)
pool.submit(lambda: (time.sleep(0.5), Path({str(done_pool)!r}).write_text("done")))
def later():
    time.sleep(0.5)
    Path({str(done_thread)!r}).write_text("done")
threading.Thread(target=later).start()
exit_now(0)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert done_pool.read_text() == "done" and done_thread.read_text() == "done"


def test_the_console_script_keeps_exit_codes(tmp_path: Path) -> None:
    replayml = Path(sys.executable).with_name("replayml")
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    ok = subprocess.run([replayml, "--help"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "replay" in ok.stdout
    missing = subprocess.run(
        [replayml, "replay", "0" * 32, "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert missing.returncode == 2, missing.stderr
    assert "no tracking store" in missing.stderr
    usage = subprocess.run([replayml, "replay"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
