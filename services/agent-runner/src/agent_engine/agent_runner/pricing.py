"""Prices per million tokens, exact decimals, from a versioned price table file. Mock calls cost nothing.

The bundled table is `prices/<version>.json`; AE_PRICE_TABLE names another file of the same shape.
Every llm.called event records the table version its cost came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path

from agent_engine.contracts.events import Usage

BUNDLED = Path(__file__).parent / "prices" / "2026-11-01.json"
MILLION = Decimal(1_000_000)
FIELDS = ("input", "output", "cache_read", "cache_write")


@dataclass(frozen=True)
class PriceTable:
    version: str
    prices: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]]
    """model prefix -> (input, output, cache read, cache write) USD per million tokens"""

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """USD cost of one call, or None when the model is not in the table (reported, never guessed)."""
        match = max((p for p in self.prices if model.startswith(p)), key=len, default=None)
        if match is None:
            return None
        p_in, p_out, p_read, p_write = self.prices[match]
        plain_input = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        total = (plain_input * p_in + usage.output_tokens * p_out
                 + usage.cache_read_tokens * p_read + usage.cache_write_tokens * p_write)
        return total / MILLION


def load(path: Path) -> PriceTable:
    """Read a price table file; any problem names the file and what is wrong with it."""
    try:
        raw = json.loads(path.read_text())
        version = raw["version"]
        if not isinstance(version, str) or not version:
            raise ValueError("'version' must be a non-empty string")
        prices = {}
        for model, row in raw["models"].items():
            missing = [f for f in FIELDS if f not in row]
            if missing:
                raise ValueError(f"model '{model}' lacks {missing}")
            values = tuple(Decimal(str(row[f])) for f in FIELDS)
            if any(v < 0 for v in values):
                raise ValueError(f"model '{model}' has a negative price")
            prices[model] = values
    except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as exc:
        raise SystemExit(f"price table {path}: {type(exc).__name__}: {exc}") from None
    return PriceTable(version, prices)  # type: ignore[arg-type]


@cache
def active() -> PriceTable:
    """The table this process prices with: AE_PRICE_TABLE, else the bundled one (read once)."""
    configured = os.environ.get("AE_PRICE_TABLE")
    return load(Path(configured) if configured else BUNDLED)


def cost(model: str, usage: Usage) -> Decimal | None:
    return active().cost(model, usage)


PRICE_TABLE_VERSION = load(BUNDLED).version
"""The bundled table's version (the active one may differ: `active().version`)."""
