"""Input handed to the engine by another thread (the HTTP inputs), answered after its commit.

`Engine.submit` puts a `Submission` here; the engine thread takes it into its next batch
beside the MQTT messages, decodes its messages with the same decoder, counts and stores its
rejects with the batch's, commits them in the same transaction, and only then resolves the
submission's future with the `Outcome`. The HTTP client gets its 200 after that commit, the
way an MQTT message gets its ack (DESIGN §6): a crash before it means no answer, and the
client sends again; a crash after it, a resend that is counted as a duplicate.

A future the caller cancelled while its submission still waited (the HTTP request timed
out) is dropped when taken: its client got no 200 and will send again.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from devices.decode import Decoded
from devices.readings import Reject


class EngineUnavailableError(RuntimeError):
    """The engine is not running (or stopped before the submission's batch committed)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a submission: each message decoded (in order), and the rejects that
    came with it. All of it is committed."""

    decoded: tuple[Decoded, ...]
    rejects: tuple[Reject, ...]

    @property
    def accepted(self) -> int:
        """Readings the decoder accepted (stored, or found stored already: duplicates)."""
        return sum(len(d.readings) for d in self.decoded)


@dataclass(frozen=True, slots=True)
class Submission:
    """Messages in the MQTT wire format (topic, payload), rejects judged before the engine
    (a body that is no document at all), the wall clock at arrival, and the future."""

    messages: tuple[tuple[str, bytes], ...]
    rejects: tuple[Reject, ...]
    arrived_ms: int
    future: Future[Outcome]

    @property
    def size(self) -> int:
        """How much of a batch it takes."""
        return max(1, len(self.messages) + len(self.rejects))


class SubmissionQueue:
    """Submissions waiting for the engine thread; closed when the engine stops."""

    def __init__(self) -> None:
        self._items: deque[Submission] = deque()
        self._ready = threading.Condition()
        self._closed: BaseException | None = None

    def put(self, submission: Submission) -> None:
        """Queue a submission; fail its future at once if the queue is closed."""
        with self._ready:
            if self._closed is None:
                self._items.append(submission)
                self._ready.notify_all()
                return
        _fail(submission, self._closed)

    def take(self, budget: int) -> list[Submission]:
        """Submissions of about `budget` messages (at least one when any waits), marked running."""
        taken: list[Submission] = []
        size = 0
        with self._ready:
            while self._items and (not taken or size + self._items[0].size <= budget):
                item = self._items.popleft()
                if item.future.set_running_or_notify_cancel():
                    taken.append(item)
                    size += item.size
        return taken

    def wait(self, timeout_s: float) -> None:
        """Return when a submission waits, the queue closes, or `timeout_s` passed."""
        with self._ready:
            if not self._items and self._closed is None:
                self._ready.wait(timeout_s)

    def close(self, why: BaseException) -> None:
        """Refuse new submissions and fail those still waiting with `why`."""
        with self._ready:
            self._closed = why
            left = list(self._items)
            self._items.clear()
            self._ready.notify_all()
        for item in left:
            if item.future.set_running_or_notify_cancel():
                _fail(item, why)


def resolve(submissions: Sequence[Submission], outcomes: Sequence[Outcome]) -> None:
    """Answer committed submissions."""
    for submission, outcome in zip(submissions, outcomes, strict=True):
        submission.future.set_result(outcome)


def fail(submissions: Sequence[Submission], why: BaseException) -> None:
    """Answer submissions whose batch did not commit: `EngineUnavailableError`, caused by
    `why`. Those answered already (the failure came after the commit) keep their answer."""
    for submission in submissions:
        _fail(submission, why)


def _fail(submission: Submission, why: BaseException) -> None:
    error = why
    if not isinstance(why, EngineUnavailableError):
        error = EngineUnavailableError(f"the batch did not commit ({why!r})")
        error.__cause__ = why
    with contextlib.suppress(InvalidStateError):  # resolved, or cancelled by its caller
        submission.future.set_exception(error)
