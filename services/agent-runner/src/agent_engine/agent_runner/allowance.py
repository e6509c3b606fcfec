"""The reservation an agent dispatch carries (`budget_usd`), enforced: the router reserved the dispatch's worst
case against the task's budget, and this runner never starts a call whose own worst case would exceed what is
left of it, so what a dispatch spends never exceeds its reservation (docs/guardrails.md, Budgets)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from agent_engine.agent_runner.providers import LlmRequest
from agent_engine.contracts.pricing import PriceTable

PER_MESSAGE_BYTES = 16
"""What a provider adds around each message (role and framing tokens), counted as bytes: one token each at most."""


def request_bytes(request: LlmRequest) -> int:
    """An upper bound of the request's input tokens: its UTF-8 bytes (no tokenizer makes more tokens than
    bytes) and the framing of each message."""
    return len(request.text().encode()) + PER_MESSAGE_BYTES * (len(request.turns) + 1 + len(request.tools))


class Allowance:
    """What is left of one dispatch's reservation while its calls are made (no reservation: no limit)."""

    def __init__(self, budget_usd: str | None, prices: PriceTable, models: list[str]) -> None:
        self.prices = prices
        self.models = models
        self.left: Decimal | None = None
        self.reserved = budget_usd or ""
        if budget_usd is not None:
            try:
                self.left = Decimal(budget_usd)
            except InvalidOperation:
                self.left = Decimal(0)  # unreadable: nothing may be spent rather than anything

    def refusal(self, request: LlmRequest) -> str:
        """Why this call may not start ("" when it may): its worst case is over what is left."""
        if self.left is None:
            return ""
        worst = self.prices.worst_case(self.models, request_bytes(request), request.agent.max_tokens)
        if isinstance(worst, str):
            return (f"over budget: model '{worst}' has no price in price table {self.prices.version}, so the cost "
                    f"of a call has no bound")
        if worst <= self.left:
            return ""
        what = "repair turn" if request.repair else "summary call" if request.purpose == "summary" else "call"
        return (f"over budget: the next {what} could cost up to ${worst} (worst case), over the ${self.left} left "
                f"of the ${self.reserved} reserved for this dispatch; not started")

    def spend(self, cost_usd: str | None) -> None:
        if self.left is None or cost_usd is None:
            return
        try:
            self.left -= Decimal(cost_usd)
        except InvalidOperation:  # unpriced: nothing more may start
            self.left = Decimal(0)
