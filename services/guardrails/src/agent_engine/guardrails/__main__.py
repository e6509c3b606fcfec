"""`python -m agent_engine.guardrails`: the guardrails service."""

from __future__ import annotations

import asyncio

from agent_engine.guardrails.policy import policy_file_from_env
from agent_engine.guardrails.ratelimit import RateLimits
from agent_engine.guardrails.service import policy_from_env, serve
from agent_engine.runtime import service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    policy_file = policy_file_from_env()  # a mistake in it stops the service here, naming the file and field
    policy = policy_from_env(policy_file)
    limits = RateLimits.from_policy(policy_file)
    bus = await Bus.open(settings.nats_url, "guardrails")
    try:
        await serve(bus, policy, settings, stop, limits)
    finally:
        await bus.close()


if __name__ == "__main__":
    service.run("guardrails", main)
