"""A circuit breaker per (provider, model), in this agent-runner process.

closed ──N consecutive failures──▶ open ──cool-down passed──▶ half_open ──probe succeeds──▶ closed
                                     ▲                            │
                                     └──────probe fails───────────┘

While open, the gateway does not call the model (it goes on to the next in the chain). In half_open
one call at a time is let through as a probe. Only transient failures (429, 5xx, 529, connection
errors) count; a request the provider refuses as bad (say a 400) says nothing about its health.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 5
    """Consecutive transient failures that open the circuit (AE_BREAKER_FAILURES)."""
    cooldown_s: float = 30.0
    """How long it stays open before a probe is let through (AE_BREAKER_COOLDOWN_S)."""


@dataclass
class CircuitBreaker:
    provider: str
    model: str
    policy: BreakerPolicy
    clock: Callable[[], float] = time.monotonic
    state: State = "closed"
    consecutive_failures: int = 0
    last_error: str = ""
    opened_at: datetime | None = None
    _opened_mono: float = 0.0
    _probing: bool = field(default=False, repr=False)

    def current(self) -> State:
        """The state now: an open circuit whose cool-down has passed is half-open."""
        if self.state == "open" and self.clock() - self._opened_mono >= self.policy.cooldown_s:
            self.state = "half_open"
        return self.state

    def allow(self) -> bool:
        """May a call go out now? In half_open only one probe at a time."""
        state = self.current()
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.state, self.consecutive_failures, self._probing = "closed", 0, False
        self.opened_at = None

    def failed(self, error: str) -> None:
        """A transient failure: counts towards opening; a failed probe re-opens at once."""
        self.consecutive_failures += 1
        self.last_error = error
        if self.state == "half_open" or self.consecutive_failures >= self.policy.failures:
            self.state = "open"
            self._opened_mono = self.clock()
            self.opened_at = datetime.now(UTC)
        self._probing = False

    def released(self) -> None:
        """The call ended without saying anything about the provider's health (a refused request)."""
        self._probing = False

    def as_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "state": self.current(),
                "consecutive_failures": self.consecutive_failures, "last_error": self.last_error or None,
                "opened_at": self.opened_at.isoformat() if self.opened_at else None}


@dataclass
class Breakers:
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    clock: Callable[[], float] = time.monotonic
    by_route: dict[tuple[str, str], CircuitBreaker] = field(default_factory=dict)

    def get(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        if key not in self.by_route:
            self.by_route[key] = CircuitBreaker(provider, model, self.policy, self.clock)
        return self.by_route[key]

    def as_json(self) -> list[dict[str, Any]]:
        return [self.by_route[key].as_json() for key in sorted(self.by_route)]
