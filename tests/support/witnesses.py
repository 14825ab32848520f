"""Real witness processes (``mlledger witness serve``) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WitnessProcess:
    """One ``mlledger witness serve`` subprocess: its state directory, URL and verifier key."""

    state: Path
    logs: list[str]
    name: str = "witness.test/w1"
    port: int = 0
    url: str = ""
    vkey: str = ""
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    def start(self) -> WitnessProcess:
        """Start it (on the port it had before, if it ran already) and wait until it listens."""
        args = [sys.executable, "-m", "service", "witness", "serve", "--state", str(self.state)]
        args += ["--name", self.name, "--port", str(self.port)]
        for log in self.logs:
            args += ["--log", log]
        env = {**os.environ, "MLLEDGER_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                _, err = self.process.communicate(timeout=5)
                raise RuntimeError(f"witness exited: {err.strip()}")
            if line.startswith("witness "):
                self.vkey = line.split(" ", 1)[1].strip()
            if line.startswith("listening on "):
                self.url = line.removeprefix("listening on ").strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
        raise RuntimeError("witness did not start within 30 s")

    def kill(self) -> None:
        """SIGKILL it, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        if self.process is not None:
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        self.process = None
