"""Prices per million tokens, exact decimals, from a versioned table. Mock calls cost nothing."""

from __future__ import annotations

from decimal import Decimal

from agent_engine.contracts.events import Usage

PRICE_TABLE_VERSION = "2026-11-01"
# model prefix -> (input, output, cache read, cache write) USD per million tokens
PRICES: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]] = {
    "mock": (Decimal(0), Decimal(0), Decimal(0), Decimal(0)),
    "claude-opus-4": (Decimal(15), Decimal(75), Decimal("1.50"), Decimal("18.75")),
    "claude-sonnet-4": (Decimal(3), Decimal(15), Decimal("0.30"), Decimal("3.75")),
    "claude-haiku-4": (Decimal(1), Decimal(5), Decimal("0.10"), Decimal("1.25")),
}
MILLION = Decimal(1_000_000)


def cost(model: str, usage: Usage) -> Decimal | None:
    """USD cost of one call, or None when the model is not in the table (reported, never guessed)."""
    match = max((p for p in PRICES if model.startswith(p)), key=len, default=None)
    if match is None:
        return None
    p_in, p_out, p_read, p_write = PRICES[match]
    plain_input = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    total = (plain_input * p_in + usage.output_tokens * p_out
             + usage.cache_read_tokens * p_read + usage.cache_write_tokens * p_write)
    return total / MILLION
