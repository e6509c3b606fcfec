"""Who creates the engine's streams at start: the router (and the platform credential, agentctl), no other service.

A right to create a named stream lets its holder create it, while it is missing, with any subjects and settings:
say `AE_EVENTS` on another tenant's inbox, which it could then read (docs/security.md, "Only the router creates
streams"). So no other service's credential may create the event stream, the dead-letter stream or the router's
KV buckets (runtime/auth.py); each waits at start, saying so in its log, until the router has made them."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from agent_engine.contracts.credentials import Credential
from agent_engine.contracts.mcp import MCP_TOOLS_BUCKET
from agent_engine.contracts.subjects import DLQ_STREAM, STREAM, TOOL_CALLS_BUCKET, WORKFLOW_BUCKET

log = logging.getLogger(__name__)

CREATOR = "router"
"""The one service whose credential may create the engine's streams (it ensures them when it starts)."""
ENGINE_STREAMS = (STREAM, DLQ_STREAM, f"KV_{TOOL_CALLS_BUCKET}")
"""What `streams.ensure_streams` makes, in that order: what a service waits for when it may not make them."""
ROUTER_BUCKETS = (TOOL_CALLS_BUCKET, WORKFLOW_BUCKET, MCP_TOOLS_BUCKET)
"""KV buckets the router makes at start and other services only use: `streams.ensure_bucket` waits for them when
its credential may not create them. (A bucket one service alone uses, guardrails' rate limits, is its own.)"""
POLL_S = 0.5


def creates_streams(credential: Credential | None) -> bool:
    """Whether a process connecting with `credential` creates the engine's streams when missing: the router's
    and the platform's do; so does a connection with none (a server without authorization, where any may).
    Every other service waits for the router."""
    if credential is None or credential.kind == "platform":
        return True
    return credential.kind == "service" and credential.user == CREATOR


async def wait_for_streams(js: JetStreamContext, service: str, names: tuple[str, ...] = ENGINE_STREAMS,
                           poll_s: float = POLL_S) -> None:
    """Return once every stream of `names` exists, logging one line for each that is missing while waiting (a
    service started before the router, or a router that cannot start: its log says why)."""
    for name in names:
        said = False
        while True:
            try:
                await js.stream_info(name)
                break
            except NotFoundError:
                if not said:
                    log.warning("%s waits for the router to create stream %s (only the router may create "
                                "the engine's streams; is it running?)", service, name)
                    said = True
                await asyncio.sleep(poll_s)
        if said:
            log.info("stream %s exists now", name)
