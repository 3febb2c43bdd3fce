"""The training queue: one job at a time, stop is SIGINT, the queue file survives a restart."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tuneforge.studio.queue import Job, JobQueue
from tuneforge.studio.workspace import Workspace


class ScriptJob(Job):
    """A job whose command is a short Python script, so the queue is tested without training."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", Path(self.recipe).read_text(encoding="utf-8")]


def _wait(q: JobQueue, job_id: int, states: tuple[str, ...], limit: float = 20.0) -> str:
    end = time.time() + limit
    while time.time() < end:
        q.tick()
        if q.get(job_id).state in states:
            return q.get(job_id).state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {q.get(job_id).state}")


def _queue(tmp_path: Path) -> tuple[JobQueue, Path]:
    ws = Workspace.at(tmp_path / "runs")
    q = JobQueue(ws)
    return q, ws.runs


def _submit(q: JobQueue, root: Path, name: str, script: str) -> Job:
    path = root / f"{name}.py"
    path.write_text(script, encoding="utf-8")
    job = q.submit(path, root / name)
    q.jobs[-1] = ScriptJob(**job.__dict__)
    return q.jobs[-1]


def test_one_job_at_a_time_and_exit_codes(tmp_path: Path) -> None:
    q, root = _queue(tmp_path)
    first = _submit(q, root, "one", "import time; time.sleep(0.5)")
    second = _submit(q, root, "two", "raise SystemExit(2)")
    q.tick()
    assert q.get(first.id).state == "running" and q.get(second.id).state == "queued"
    assert _wait(q, first.id, ("done",)) == "done"
    assert _wait(q, second.id, ("failed",)) == "failed"
    assert q.get(second.id).returncode == 2


def test_stop_sends_sigint_as_ctrl_c(tmp_path: Path) -> None:
    q, root = _queue(tmp_path)
    script = ("import time\n"
              "try:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    raise SystemExit(130)\n")
    job = _submit(q, root, "long", script)
    q.tick()
    time.sleep(0.5)  # let the interpreter install its SIGINT handler
    q.stop(job.id)
    assert _wait(q, job.id, ("interrupted", "failed")) == "interrupted"


def test_the_queue_survives_a_restart(tmp_path: Path) -> None:
    q, root = _queue(tmp_path)
    running = _submit(q, root, "gone", "import time; time.sleep(30)")
    waiting = _submit(q, root, "later", "pass")
    q.tick()
    pid = q.get(running.id).pid
    assert pid is not None
    import os
    import signal

    os.killpg(pid, signal.SIGKILL)  # the studio and its job die together
    q._procs[running.id].wait()
    again = JobQueue(Workspace.at(root))  # a new studio on the same folder
    assert again.get(running.id).state == "interrupted"
    assert again.get(waiting.id).state == "queued"
