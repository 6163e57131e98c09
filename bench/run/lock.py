"""One owner per run directory: RUN_DIR/.lock, held with flock for the life of a run.

A second `seqbench run --out DIR` or a `--resume DIR` while the first is alive fails at once
(RunDirError, exit 2) naming the holder (pid, host, since when). The kernel drops a flock
when its process dies, however it dies, so a lock left by a killed run is stale: the next
run takes it over and says so. On a file system without flock the pid file alone decides
(a holder on this host is alive when its pid is).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from seqbench.errors import RunDirError

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"


class RunLock:
    """`with RunLock(run_dir):` — exclusive ownership of a run directory."""

    def __init__(self, run_dir: Path, stream: TextIO | None = None) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.stream = stream if stream is not None else sys.stderr
        self.fd: int | None = None

    def _read(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"{self.path.parent}: cannot create {LOCK_FILE} ({exc.strerror or exc}); "
                              "give a writable --out") from None
        holder = self._read()
        locked_by_other = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                locked_by_other = True
            except OSError:  # no flock here (some network file systems): fall back to the pid
                locked_by_other = holder.get("host") == socket.gethostname() and _pid_alive(int(holder.get("pid", 0)))
        if locked_by_other:
            os.close(fd)
            raise RunDirError(f"{self.path.parent} is in use by another seqbench run ({_describe(holder)}); "
                              "wait for it to finish, or use another --out")
        if holder.get("pid") and holder.get("pid") != os.getpid():
            self.stream.write(f"seqbench: taking over the stale lock of {self.path.parent} "
                              f"({_describe(holder)}: no longer running)\n")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv[1:]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock; the empty file stays (unlinking it could race a new owner)
        self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
