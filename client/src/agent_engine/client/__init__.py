"""Agent Engine's client for other systems: submit tasks (with idempotency keys), await their outcome, follow
their events, show their state and history. Depends on the contracts and nats-py only.

    from agent_engine.client import connect

    async with connect("nats://127.0.0.1:4222", "acme-billing.cred.json") as engine:
        submitted = await engine.submit("research-review", {"brief": "..."}, idempotency_key="order-42")
        outcome = await engine.outcome(submitted.task_id)

docs/client.md is the guide.
"""

from agent_engine.client.connection import SOURCE, Client, connect, identity
from agent_engine.client.errors import (
    ClientError,
    ClientTimeout,
    ConnectError,
    QueryError,
    RequestRejected,
    Unavailable,
)
from agent_engine.client.follow import TaskEvents, published
from agent_engine.client.results import Outcome, Submitted

__all__ = [
    "SOURCE",
    "Client",
    "ClientError",
    "ClientTimeout",
    "ConnectError",
    "Outcome",
    "QueryError",
    "RequestRejected",
    "Submitted",
    "TaskEvents",
    "Unavailable",
    "connect",
    "identity",
    "published",
]
