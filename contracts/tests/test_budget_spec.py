"""A workflow's budget: money as an exact decimal in a string, with errors that say how to write it; the price
table's worst case of one call."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from agent_engine.contracts.manifest import BudgetSpec
from agent_engine.contracts.pricing import PriceTable


def test_a_budget_is_an_exact_decimal_in_a_string() -> None:
    assert BudgetSpec(task_usd="0.50").on_exceed == "fail"
    with pytest.raises(ValidationError, match=r'write it in quotes, e.g. task_usd: "0.5"'):
        BudgetSpec(task_usd=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="should match pattern"):
        BudgetSpec(task_usd="-1")
    with pytest.raises(ValidationError, match="alert_at"):
        BudgetSpec(task_usd="1", alert_at=1.5)


def test_the_worst_case_of_one_call_prices_every_input_byte_at_the_dearest_input_price() -> None:
    table = PriceTable("t", {"a": (Decimal(3), Decimal(15), Decimal("0.3"), Decimal("3.75")),
                             "b": (Decimal(1), Decimal(5), Decimal("0.1"), Decimal(1))})
    assert table.worst_case(["a-1", "b-2"], 1_000, 100) == (1_000 * Decimal("3.75") + 100 * 15) / 1_000_000
    assert table.worst_case(["a-1", "c"], 1, 1) == "c"
    assert table.subset(["a-1", "zzz"]).prices == {"a": table.prices["a"]}
