"""`agentctl cost rebuild`: empty the ledger (every table but the erased tasks) and fold it again from the
stream's first message, so it equals what the stream holds, to the cent.

The fold loop (__main__.fold) stops when a rebuild is asked; main resets the ledger and starts a new consumer from
the first message; the askers are answered once that fold has caught up (it reached the stream's last sequence
at the time of asking, or the consumer had nothing more to give). Askers who come while a rebuild runs wait for
the same one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

BACKFILLED = ("tasks", "attempts", "task_workflows")
"""Tables (after the `ae_ledger_` prefix) a version added to the projection: the task index and the agent
scores' call attempts and task workflows. Created empty when telemetry starts, they hold only what is folded
after; a rebuild folds the whole stream into them."""


def backfill_hint(new: set[str], position: int, prefix: str = "ae_ledger") -> str:
    """What to tell the operator when telemetry created some of the BACKFILLED tables at start (`new`) over a
    ledger that had already folded the stream up to `position`: history before this start is not in them. ""
    when there is nothing to say (a first start, or nothing new)."""
    missing = sorted(new & set(BACKFILLED))
    if not missing or position == 0:
        return ""
    what = {"tasks": "the task index (task list, ae_tasks)", "attempts": "the agent scores (agents stats)",
            "task_workflows": "the agent scores (agents stats)"}
    tables = ", ".join(f"{prefix}_{t}" for t in missing)
    return (f"new ledger tables {tables} start empty while the ledger has folded the stream to sequence {position}: "
            f"{'; '.join(dict.fromkeys(what[t] for t in missing))} will count only events "
            "folded from now on; run `agentctl cost rebuild` to fold the whole stream into them")


@dataclass
class Rebuild:
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a rebuild is asked and the fold must stop; cleared once the ledger is reset."""
    running: bool = False
    """The ledger was reset and is being folded again."""
    target: int = 0
    """The stream's last sequence when the rebuild was asked: reaching it is catching up."""
    folded: int = 0
    """Messages folded since the reset."""
    position: int = 0
    """The last stream sequence folded since the reset."""
    began: float = 0.0
    waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)

    def ask(self, last_sequence: int) -> asyncio.Future[dict[str, Any]]:
        """The answer to come; a rebuild asked while one is pending or running joins it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        if not self.asked.is_set() and not self.running:
            self.target, self.folded, self.position, self.began = last_sequence, 0, 0, time.monotonic()
            self.asked.set()
        return future

    def started(self) -> None:
        """The ledger is empty: the fold from the first message begins."""
        self.asked.clear()
        self.running = True

    def failed(self, problem: str) -> None:
        """The reset failed (PostgreSQL away): the askers hear it, and the ledger goes on as it was."""
        self.asked.clear()
        self.running = False
        self._answer({"error": f"the ledger was not rebuilt: {problem}"})

    def progress(self, folded: int, last_sequence: int | None) -> None:
        """After each batch (`last_sequence` its last message's) or an idle wait (None): answer the askers once
        the refold has caught up."""
        if not self.running:
            return
        self.folded += folded
        self.position = max(self.position, last_sequence or 0)
        if last_sequence is None or last_sequence >= self.target:
            self.running = False
            self._answer({"rebuilt": True, "messages": self.folded, "position": self.position,
                          "seconds": round(time.monotonic() - self.began, 3)})

    def _answer(self, reply: dict[str, Any]) -> None:
        for future in self.waiters:
            if not future.done():
                future.set_result(reply)
        self.waiters.clear()
