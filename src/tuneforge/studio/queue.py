"""The training queue: one run at a time on this machine, each in its own ``python -m tuneforge train`` process.

Why a subprocess: stopping is then exactly what Ctrl-C does on the command line (SIGINT; the run
marks itself ``interrupted`` and keeps its last checkpoint), resuming is exactly ``--resume``, and a
crash in training can never take the studio down. Why a JSON file under the runs root: a restarted
studio finds what was queued; a job that was running when the studio stopped is adopted while its
process lives and is marked ``interrupted`` (resumable) otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.files import write_json_atomic
from tuneforge.studio.workspace import Workspace

ACTIVE = ("queued", "running", "stopping")
EXIT_STATES = {0: "done", 130: "interrupted", -2: "interrupted"}  # -2: killed by SIGINT before Python's handler


@dataclass
class Job:
    id: int
    recipe: str
    output: str
    resume: bool = False
    state: str = "queued"
    pid: int | None = None
    returncode: int | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None

    @property
    def log(self) -> str:
        return f"job-{self.id}.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tuneforge", "train", self.recipe, *(["--resume"] if self.resume else [])]


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class JobQueue:
    """Jobs in ``queue.json``; a worker thread starts the oldest queued job when none is running."""

    def __init__(self, ws: Workspace, poll_s: float = 0.5) -> None:
        self.ws = ws
        self.poll_s = poll_s
        self._lock = threading.RLock()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.jobs = self._load()
        self._adopt()

    # -- the file --------------------------------------------------------------------------
    def _load(self) -> list[Job]:
        import json

        if not self.ws.queue_file.is_file():
            return []
        try:
            rows = json.loads(self.ws.queue_file.read_text(encoding="utf-8"))["jobs"]
            return [Job(**r) for r in rows]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{self.ws.queue_file} is damaged ({err}); move it away to start an empty queue") from None

    def _save(self) -> None:
        write_json_atomic(self.ws.queue_file, {"jobs": [asdict(j) for j in self.jobs]})

    def _adopt(self) -> None:
        """After a restart: a running job whose process is gone was interrupted with the studio."""
        with self._lock:
            for job in self.jobs:
                if job.state in ("running", "stopping") and not _alive(job.pid):
                    job.state, job.ended = "interrupted", time.time()
            self._save()

    # -- the public actions -----------------------------------------------------------------
    def submit(self, recipe: Path, output: Path, *, resume: bool = False) -> Job:
        with self._lock:
            if any(j.output == str(output) and j.state in ACTIVE for j in self.jobs):
                raise UserError(f"{output} already has a queued or running job; stop it first")
            job = Job(id=max((j.id for j in self.jobs), default=0) + 1, recipe=str(recipe), output=str(output),
                      resume=resume)
            self.jobs.append(job)
            self._save()
            return job

    def stop(self, job_id: int) -> Job:
        """SIGINT, as Ctrl-C: the run writes ``interrupted`` and keeps its checkpoints; a queued job is dropped."""
        with self._lock:
            job = self.get(job_id)
            if job.state == "queued":
                job.state, job.ended = "cancelled", time.time()
            elif job.state == "running" and job.pid is not None:
                os.killpg(job.pid, signal.SIGINT)  # the job's own process group, as Ctrl-C in a terminal
                job.state = "stopping"
            else:
                raise UserError(f"job {job_id} is {job.state}; only a queued or running job can be stopped")
            self._save()
            return job

    def get(self, job_id: int) -> Job:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise UserError(f"no job {job_id} in the queue")

    def latest_for(self, output: Path) -> Job | None:
        with self._lock:
            mine = [j for j in self.jobs if j.output == str(output)]
            return mine[-1] if mine else None

    # -- the worker -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tuneforge-studio-queue", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _work(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.poll_s)

    def tick(self) -> None:
        """One pass: notice finished processes, then start the next queued job if nothing runs."""
        with self._lock:
            for job in self.jobs:
                if job.state in ("running", "stopping"):
                    self._reap(job)
            if any(j.state in ("running", "stopping") for j in self.jobs):
                return
            nxt = next((j for j in self.jobs if j.state == "queued"), None)
            if nxt is not None:
                self._launch(nxt)

    def _reap(self, job: Job) -> None:
        proc = self._procs.get(job.id)
        code = proc.poll() if proc is not None else (None if _alive(job.pid) else -1)
        if code is None:
            return
        self._procs.pop(job.id, None)
        job.returncode = code
        job.state = EXIT_STATES.get(code, "failed")
        job.ended = time.time()
        self._save()

    def _launch(self, job: Job) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.ws.logs / job.log, "ab") as log:
            proc = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True, preexec_fn=_interruptible)
        self._procs[job.id] = proc
        job.pid, job.state, job.started = proc.pid, "running", time.time()
        self._save()


def _interruptible() -> None:
    """In the child, before exec: SIGINT back to its default action.

    A studio started in the background by a shell (``tuneforge studio &``, a service) inherits SIGINT
    as *ignored*, and an ignored signal stays ignored across exec: Python would then never raise
    KeyboardInterrupt, and the stop button would hang instead of stopping the run cleanly.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)

