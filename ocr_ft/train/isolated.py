"""Training in a child process: :func:`train_isolated` has the signature and result of
:func:`ocr_ft.train.trainer.train` but runs it in a fresh ``python -m ocr_ft.train.isolated`` process.

Why: accelerate keeps one state per process, so a process trains on its first visible GPU only, and two
Trainers in threads of one process are not safe. :func:`ocr_ft.train.search.run_study` uses this to run
several trials at once, one GPU each.

How it works:

- device ``cuda:N`` -> the child's environment is the parent's (HF variables and all) with
  ``CUDA_VISIBLE_DEVICES`` set to the parent's N-th visible GPU, and it trains on ``cuda:0`` there; the
  summary's ``device`` is the child's (``cuda:0``). Other devices (``cpu``, ``None``) are passed as given.
- config, records and paths go to the child pickled over a pipe (nothing is written for it, nothing new is
  logged); each ``on_log`` row comes back over a second pipe and the parent calls ``on_log`` in the calling
  thread. When ``on_log`` raises (Optuna's ``TrialPruned``, a NaN check...), the parent stops the child
  (SIGTERM, SIGKILL after ``grace_s``), waits for it and re-raises that exception. The same happens for
  anything raised in the parent while it waits (``KeyboardInterrupt``).
- a child that raises: :class:`IsolatedTrainError` with the child's exception type, message and the last
  lines of its traceback; a child that dies without a word (killed, segfault): its exit status and the last
  lines of its stderr (which is also passed through to the parent's stderr).
- no orphan: the child watches the pipe the parent keeps open and exits when it closes (the parent ended,
  however it ended). :func:`stop_all` stops every live child of this process: their waiting
  ``train_isolated`` calls raise :class:`TrainInterrupted` (a ``BaseException``: an Optuna trial is left
  running, so a resumed study runs it again).
- the result is read from the run directory's ``summary.json``.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Sequence

GRACE_S = 10.0
_TRACEBACK_LINES = 12
_STDERR_LINES = 20

_live: dict[int, "_Child"] = {}
_live_lock = threading.Lock()


class IsolatedTrainError(RuntimeError):
    """Training failed inside the child process; ``exc_type`` names the child's exception type."""

    def __init__(self, message: str, exc_type: str = "", child_traceback: str = "", exitcode: int | None = None):
        super().__init__(message)
        self.exc_type, self.child_traceback, self.exitcode = exc_type, child_traceback, exitcode


class TrainInterrupted(BaseException):
    """The child was stopped from outside (:func:`stop_all`): the run did not finish and did not fail."""


def child_env(device: Any, environ: dict[str, str] | None = None) -> tuple[dict[str, str], str | None]:
    """The child's environment and the device it trains on: ``cuda:N`` -> ``CUDA_VISIBLE_DEVICES`` = the N-th
    GPU visible to the parent (its own ``CUDA_VISIBLE_DEVICES`` list when set) and ``cuda:0``."""
    env = dict(os.environ if environ is None else environ)
    if device is None:
        return env, None
    text = str(device)
    kind, _, index = text.partition(":")
    if kind != "cuda":
        return env, text
    if index and not index.isdigit():
        raise ValueError(f"device {text!r}: expected cuda or cuda:<index>")
    n = int(index or 0)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if n >= len(ids):
            raise ValueError(f"device {text}: CUDA_VISIBLE_DEVICES={visible} shows {len(ids)} GPU(s)")
        env["CUDA_VISIBLE_DEVICES"] = ids[n]
    else:
        env["CUDA_VISIBLE_DEVICES"] = str(n)
    return env, "cuda:0"


class _Child:
    def __init__(self, proc: subprocess.Popen, device: Any):
        self.proc, self.device = proc, device
        self.stopped_from_outside = False
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._stderr = threading.Thread(target=self._pump, daemon=True, name=f"train-child-{proc.pid}-stderr")
        self._stderr.start()

    def _pump(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self.stderr_tail.append(line.rstrip("\n"))
            try:
                sys.stderr.write(line)
            except Exception:  # noqa: BLE001 - a closed parent stderr must not hide the child's end
                pass

    def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns once the child is gone."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()

    def join_stderr(self) -> None:
        self._stderr.join(timeout=5)


def stop_all(grace_s: float = GRACE_S) -> int:
    """Stop every training child this process has running; their ``train_isolated`` calls raise
    :class:`TrainInterrupted`. Returns how many were stopped."""
    with _live_lock:
        children = list(_live.values())
    for child in children:
        child.stopped_from_outside = True
    for child in children:
        child.stop(grace_s)
    return len(children)


def live_pids() -> list[int]:
    """The pids of this process's running training children."""
    with _live_lock:
        return [pid for pid, c in _live.items() if c.proc.poll() is None]


def train_isolated(
    config: Any,
    train_records: Sequence[Any],
    val_records: Sequence[Any],
    data_dir: str | Path,
    output_dir: str | Path,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    device: Any = None,
    *,
    grace_s: float = GRACE_S,
    on_start: Callable[[int], None] | None = None,
) -> Any:
    """:func:`ocr_ft.train.trainer.train` in a child process (module docstring); ``on_start`` gets the child's
    pid. Returns a :class:`ocr_ft.train.trainer.TrainResult` read from ``output_dir/summary.json``."""
    from .trainer import TrainResult

    env, child_device = child_env(device)
    # the child imports the same ocr_ft as this process (a worktree or checkout ahead of an installed copy)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = Path(output_dir)
    job = {"config": config, "train_records": list(train_records), "val_records": list(val_records),
           "data_dir": str(data_dir), "output_dir": str(out), "device": child_device, "forward_logs": on_log is not None}
    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)  # fails here, naming the object, if not picklable

    job_r, job_w = os.pipe()  # parent -> child: the job, then kept open as the child's lifeline
    ev_r, ev_w = os.pipe()  # child -> parent: ("log", row) ... ("done", None) | ("error", info)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ocr_ft.train.isolated", str(job_r), str(ev_w)],
            env=env, pass_fds=(job_r, ev_w), stderr=subprocess.PIPE, start_new_session=True,
        )
    except BaseException:
        for fd in (job_r, job_w, ev_r, ev_w):
            os.close(fd)
        raise
    os.close(job_r)
    os.close(ev_w)
    lifeline, events = Connection(job_w, readable=False), Connection(ev_r, writable=False)
    child = _Child(proc, device)
    with _live_lock:
        _live[proc.pid] = child
    outcome: tuple[str, Any] | None = None
    try:
        if on_start is not None:
            on_start(proc.pid)
        try:
            lifeline.send_bytes(payload)
        except BrokenPipeError:
            pass  # the child died before reading its job: reported below from its exit status and stderr
        while True:
            try:
                kind, body = events.recv()
            except EOFError:
                break
            if kind == "log":
                if on_log is not None:
                    on_log(body)
            else:
                outcome = (kind, body)
        proc.wait()
    except BaseException:
        child.stop(grace_s)
        raise
    finally:
        with _live_lock:
            _live.pop(proc.pid, None)
        lifeline.close()
        events.close()
        child.join_stderr()

    where = f"training child pid {proc.pid} on device {device if device is not None else 'default'}"
    if child.stopped_from_outside:
        raise TrainInterrupted(f"{where} was stopped before it finished")
    if outcome is not None and outcome[0] == "error":
        info = outcome[1]
        tail = "\n".join(info["traceback"].rstrip("\n").splitlines()[-_TRACEBACK_LINES:])
        raise IsolatedTrainError(f"{info['type']}: {info['message']} ({where}; its traceback ends:\n{tail})",
                                 exc_type=info["type"], child_traceback=info["traceback"], exitcode=proc.returncode)
    if outcome is None or proc.returncode != 0:
        status = f"exit status {proc.returncode}"
        if proc.returncode is not None and proc.returncode < 0:
            try:
                status = f"killed by signal {signal.Signals(-proc.returncode).name}"
            except ValueError:
                status = f"killed by signal {-proc.returncode}"
        tail = "\n".join(child.stderr_tail) or "(nothing on stderr)"
        raise IsolatedTrainError(f"{where} ended without a result ({status}); its stderr ends:\n{tail}",
                                 exitcode=proc.returncode)
    summary_path = out / "summary.json"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IsolatedTrainError(f"{where} finished but {summary_path} is unreadable: {exc}") from None
    return TrainResult(out, summary)


# --------------------------------------------------------------------------- the child


def _watch_parent(fd: int) -> None:
    """The parent holds the other end open until it is done with us: EOF means it is gone or stopping us."""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            os._exit(3)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or not all(a.isdigit() for a in argv):
        print("usage: python -m ocr_ft.train.isolated JOB_FD EVENTS_FD (started by train_isolated)", file=sys.stderr)
        return 2
    job_fd, events_fd = int(argv[0]), int(argv[1])
    events = Connection(events_fd, readable=False)
    lifeline = Connection(job_fd, writable=False)
    try:
        job = pickle.loads(lifeline.recv_bytes())
    except EOFError:
        return 3  # the parent went away before sending the job
    threading.Thread(target=_watch_parent, args=(job_fd,), daemon=True, name="parent-watch").start()
    try:
        from ocr_ft.train.trainer import train

        on_log = (lambda row: events.send(("log", row))) if job["forward_logs"] else None
        train(job["config"], job["train_records"], job["val_records"], job["data_dir"], job["output_dir"],
              on_log=on_log, device=job["device"])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it there
        try:
            events.send(("error", {"type": type(exc).__name__, "message": str(exc),
                                   "traceback": traceback.format_exc()}))
        except OSError:
            pass
        return 1
    events.send(("done", None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
