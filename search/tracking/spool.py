"""A write-ahead spool of mirror events: one JSONL file per trial, `<spool_dir>/<study>/trial-<n>.jsonl`.

Every event is appended before it is sent and removed once MLflow has it, so nothing is lost if the
server is down or the process dies mid-request. A file is locked (flock) while read or rewritten, so a
`flush()` in one worker and the trial's own worker never interleave; its lines stay in event order.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TRIAL_FILE = re.compile(r"^trial-(\d+)\.jsonl$")


class TrialSpool:
    """The locked spool file of one trial (only valid inside `Spool.locked`)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def events(self) -> list[dict]:
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 1 << 16):
            chunks.append(chunk)
        lines = b"".join(chunks).decode("utf-8").splitlines()
        # A line cut short by a crash mid-write is the only way a line can be unreadable; skip it.
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def append(self, event: dict) -> None:
        os.write(self._fd, (json.dumps(event) + "\n").encode("utf-8"))

    def keep_only(self, events: list[dict]) -> None:
        """Replace the file's content by `events`, or remove the file when there are none."""
        if not events:
            self.path.unlink(missing_ok=True)
            return
        os.ftruncate(self._fd, 0)
        os.write(self._fd, "".join(json.dumps(e) + "\n" for e in events).encode("utf-8"))


class Spool:
    def __init__(self, spool_dir: Path, study_name: str) -> None:
        safe = re.sub(r"[^\w.-]+", "_", study_name).strip("._") or "study"
        self.folder = Path(spool_dir) / safe

    def path(self, trial_number: int) -> Path:
        return self.folder / f"trial-{trial_number}.jsonl"

    def pending_trials(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        numbers = [int(m.group(1)) for p in self.folder.iterdir() if (m := _TRIAL_FILE.match(p.name))]
        return sorted(numbers)

    def has_pending(self, trial_number: int) -> bool:
        return self.path(trial_number).exists()

    @contextmanager
    def locked(self, trial_number: int) -> Iterator[TrialSpool]:
        path = self.path(trial_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Whoever held the lock before may have emptied and removed the file: lock the live one.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield TrialSpool(path, fd)
        finally:
            os.close(fd)
