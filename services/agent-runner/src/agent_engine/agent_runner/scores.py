"""`fallback_order: by_score`: an agent's fallbacks tried best first, by the tenant's recent figures.

The figures are telemetry's (`agentctl agents stats`, query `agents`), asked at most once per AE_SCORES_TTL_S
(default 60) per tenant, over the last AE_SCORES_WINDOW_H hours (default 24). A model ranks by its success rate
(higher first), then its cost per answered call (lower first); a model with no figures yet keeps its declared
place after those with figures. The agent's own model always goes first: the order changes only which fallback
is tried next. Nothing here decides what was answered: llm.called records the model that answered (and
llm.call_failed each one tried before it), so replay and fork read the choice from the record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

log = logging.getLogger("agent-runner")


@dataclass(frozen=True)
class Score:
    success_rate: float
    cost_per_call: Decimal


Figures = dict[str, Score]
"""By "provider/model"."""


class HasModel(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...


R = TypeVar("R", bound=HasModel)


def model_figures(rows: Sequence[dict[str, Any]]) -> Figures:
    """Telemetry's rows (one per agent and model) summed per model: what all the tenant's agents saw of it."""
    sums: dict[str, list[Any]] = {}
    for row in rows:
        key = f"{row['provider']}/{row['model']}"
        total = sums.setdefault(key, [0, 0, 0, Decimal(0)])
        total[0] += int(row["attempts"])
        total[1] += int(row["successes"])
        total[2] += int(row["answered"])
        total[3] += Decimal(str(row["cost_usd"]))
    return {key: Score(ok / attempts, cost / answered if answered else Decimal(0))
            for key, (attempts, ok, answered, cost) in sums.items() if attempts}


def by_score(chain: Sequence[R], figures: Figures) -> list[R]:
    """The chain with its fallbacks (all but the first) ordered by score; ties and unscored keep their order."""
    if len(chain) < 2:
        return list(chain)
    first, fallbacks = chain[0], list(enumerate(chain[1:]))

    def rank(item: tuple[int, R]) -> tuple[int, float, Decimal, int]:
        index, route = item
        score = figures.get(f"{route.provider}/{route.model}")
        if score is None:
            return (1, 0.0, Decimal(0), index)
        return (0, -score.success_rate, score.cost_per_call, index)

    return [first] + [route for _, route in sorted(fallbacks, key=rank)]


Fetch = Callable[[str], Awaitable[list[dict[str, Any]]]]


class Scoreboard:
    """The figures per tenant, fetched at most once per `ttl_s`; a failed fetch gives none (declared order)."""

    def __init__(self, fetch: Fetch, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch
        self.ttl_s = ttl_s
        self.clock = clock
        self.cached: dict[str, tuple[float, Figures]] = {}

    async def figures(self, tenant: str) -> Figures:
        now = self.clock()
        held = self.cached.get(tenant)
        if held is not None and now - held[0] < self.ttl_s:
            return held[1]
        try:
            figures = model_figures(await self.fetch(tenant))
        except Exception as exc:  # noqa: BLE001  telemetry away: the declared order, never a failed node
            log.warning("agent scores for tenant '%s' cannot be read (%s); fallbacks keep their declared order",
                        tenant, str(exc)[:200])
            figures = {}
        self.cached[tenant] = (now, figures)
        return figures
