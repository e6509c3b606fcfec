"""The price table, as the agent-runner uses it: moved to `agent_engine.contracts.pricing` so that the router
(which reserves budgets) and the agent-runner read the same table; re-exported here for existing callers."""

from agent_engine.contracts.pricing import (
    BUNDLED,
    FIELDS,
    MILLION,
    PRICE_TABLE_VERSION,
    PriceTable,
    active,
    cost,
    load,
)

__all__ = ["BUNDLED", "FIELDS", "MILLION", "PRICE_TABLE_VERSION", "PriceTable", "active", "cost", "load"]
