"""What the harness's process launchers share: a log file to show, and `with` that stops."""

from __future__ import annotations

from pathlib import Path
from typing import Self


class LoggedProcess:
    """A pledgewatch process whose output goes to `log_path`; leaving `with` stops it."""

    log_path: Path

    def running(self) -> bool:
        """Whether the process is alive."""
        raise NotImplementedError

    def terminate(self, timeout_s: float = 30.0) -> int:
        """Stop the process; its exit status."""
        raise NotImplementedError

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.running():
            self.terminate()  # never leave a process running
