"""Start ``monitoring-server serve`` as a real subprocess on port 0 and talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

READY_TIMEOUT_S = 60.0
T = TypeVar("T")


class ServerProcess:
    """One server process on ``data_dir``; output goes to files (no pipe can fill up)."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_dir = data_dir.parent
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr = ""
        self.runs = 0

    def start(self) -> ServerProcess:
        self.runs += 1
        (self.data_dir / "http.addr").unlink(missing_ok=True)
        out = open(self.log_dir / f"stdout.{self.runs}", "wb")  # noqa: SIM115
        err = open(self.log_dir / f"stderr.{self.runs}", "wb")  # noqa: SIM115
        with out, err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitoringserver",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--http-listen",
                    "127.0.0.1:0",
                    "--grpc-listen",
                    "127.0.0.1:0",
                    "--no-local-agent",
                    *self.extra,
                ],
                stdout=out,
                stderr=err,
                env=self.env,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        addr_file = self.data_dir / "http.addr"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.stderr()}")
            if addr_file.exists():
                self.addr = addr_file.read_text().strip()
                try:
                    if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready within {READY_TIMEOUT_S} s: {self.stderr()}")

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def stdout(self) -> str:
        return (self.log_dir / f"stdout.{self.runs}").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / f"stderr.{self.runs}").read_text(errors="replace")

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def poll(fn: Callable[[], T], timeout_s: float = 20.0) -> T:
    """Call ``fn`` until it returns a truthy value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {value!r})")
        time.sleep(0.05)
