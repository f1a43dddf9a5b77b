"""Start ``dagster dev`` as a subprocess on a throw-away DAGSTER_HOME and a free loopback port (UI tests only)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterDev:
    url: str
    home: Path
    log_path: Path
    proc: subprocess.Popen
    run_id: str | None = None  # set by the test once it knows the run it launched

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no server log: {exc}>"
        return text[-chars:]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/server_info", timeout=3) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _default_signals() -> None:
    """In the child: SIGINT/SIGTERM back to default (a shell running us in the background may ignore them, and
    dagster dev then could not be stopped gracefully)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGINT the whole process group (dagster dev then stops webserver, daemon and code server), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # whatever is left in the group (children dagster dev did not reap) goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def dagster_dev(tmp: Path, target: list[str], env: dict[str, str] | None = None,
                start_timeout: float = 180.0) -> Iterator[DagsterDev]:
    """``dagster dev <target>`` on 127.0.0.1:<free port> with DAGSTER_HOME=<tmp>/dagster_home; yields once it answers."""
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1", **(env or {})}
    log_path = tmp / "dagster_dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), *target]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_default_signals)
    server = DagsterDev(url=url, home=home, log_path=log_path, proc=proc)
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {proc.returncode} before answering:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster dev did not answer {url}/server_info in {start_timeout:.0f}s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(proc)
