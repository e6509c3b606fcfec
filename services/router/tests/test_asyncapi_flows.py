"""The AsyncAPI document says what the router consumes and answers: it must be what the router does."""

from __future__ import annotations

from agent_engine.contracts import asyncapi
from agent_engine.contracts.subjects import ROUTER_RPC
from agent_engine.router.core import BUS_INPUTS
from agent_engine.router.queries import ACTIONS


def test_the_document_lists_exactly_the_inputs_the_router_consumes() -> None:
    consumed = {t for t, (_, receivers) in asyncapi.FLOWS.items() if asyncapi.ROUTER in receivers}
    assert consumed == set(BUS_INPUTS)


def test_the_document_lists_exactly_the_queries_the_router_answers() -> None:
    assert set(asyncapi.QUERIES[ROUTER_RPC]) == set(ACTIONS)
