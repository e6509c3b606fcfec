"""Prices per million tokens, exact decimals, from a versioned price table file; mock calls cost nothing.

One table for the router (which reserves a dispatch's worst-case cost against a budget) and the agent-runner
(which prices each call it makes and never starts one whose worst case would exceed its reservation), so both
read the same numbers. The bundled table is `prices/<version>.json`; AE_PRICE_TABLE names another file of the
same shape. Every llm.called event records the table version its cost came from. Pure apart from `load`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from agent_engine.contracts.events.usage import Usage

BUNDLED = Path(__file__).parent / "prices" / "2026-11-01.json"
MILLION = Decimal(1_000_000)
FIELDS = ("input", "output", "cache_read", "cache_write")
Row = tuple[Decimal, Decimal, Decimal, Decimal]


@dataclass(frozen=True)
class PriceTable:
    version: str
    prices: Mapping[str, Row]
    """model prefix -> (input, output, cache read, cache write) USD per million tokens"""

    def row(self, model: str) -> Row | None:
        """The prices of a model: the longest prefix listed that it starts with (None: not in the table)."""
        match = max((p for p in self.prices if model.startswith(p)), key=len, default=None)
        return None if match is None else self.prices[match]

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """USD cost of one call, or None when the model is not in the table (reported, never guessed)."""
        row = self.row(model)
        if row is None:
            return None
        p_in, p_out, p_read, p_write = row
        plain_input = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        total = (plain_input * p_in + usage.output_tokens * p_out
                 + usage.cache_read_tokens * p_read + usage.cache_write_tokens * p_write)
        return total / MILLION

    def worst_case(self, models: Iterable[str], input_bytes: int, max_tokens: int) -> Decimal | str:
        """The most one call to any of `models` can cost: every input byte a token (no tokenizer makes more
        tokens than UTF-8 bytes) at the dearest input price (a cache write may cost more than plain input), and
        `max_tokens` at the dearest output price. A model not in the table has no bound: its name is returned."""
        worst = Decimal(0)
        for model in models:
            row = self.row(model)
            if row is None:
                return model
            p_in, p_out, _, p_write = row
            worst = max(worst, (input_bytes * max(p_in, p_write) + max_tokens * p_out) / MILLION)
        return worst

    def subset(self, models: Iterable[str]) -> PriceTable:
        """The rows these models are priced by (a task pins them, so its budget decisions replay the same)."""
        wanted = {}
        for model in models:
            match = max((p for p in self.prices if model.startswith(p)), key=len, default=None)
            if match is not None:
                wanted[match] = self.prices[match]
        return PriceTable(self.version, dict(sorted(wanted.items())))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version,
                "models": {m: dict(zip(FIELDS, (str(v) for v in row), strict=True)) for m, row in self.prices.items()}}


def parse(raw: Any) -> PriceTable:
    """A price table from its JSON form; raises ValueError (or KeyError/TypeError/InvalidOperation) naming the
    problem."""
    version = raw["version"]
    if not isinstance(version, str) or not version:
        raise ValueError("'version' must be a non-empty string")
    prices: dict[str, Row] = {}
    for model, row in raw["models"].items():
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"model '{model}' lacks {missing}")
        values = tuple(Decimal(str(row[f])) for f in FIELDS)
        if any(v < 0 or not v.is_finite() for v in values):
            raise ValueError(f"model '{model}' has a negative price, or one that is not a finite number")
        prices[model] = (values[0], values[1], values[2], values[3])
    return PriceTable(version, prices)


def load(path: Path) -> PriceTable:
    """Read a price table file; any problem names the file and what is wrong with it."""
    try:
        return parse(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as exc:
        raise SystemExit(f"price table {path}: {type(exc).__name__}: {exc}") from None


@cache
def active() -> PriceTable:
    """The table this process prices with: AE_PRICE_TABLE, else the bundled one (read once)."""
    configured = os.environ.get("AE_PRICE_TABLE")
    return load(Path(configured) if configured else BUNDLED)


def cost(model: str, usage: Usage) -> Decimal | None:
    return active().cost(model, usage)


PRICE_TABLE_VERSION = load(BUNDLED).version
"""The bundled table's version (the active one may differ: `active().version`)."""
