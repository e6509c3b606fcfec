"""`python -m agent_engine.guardrails`: the guardrails service."""

from __future__ import annotations

import asyncio

from agent_engine.guardrails import toolgate
from agent_engine.guardrails.outputgate import serve_outputs, tenant_policies
from agent_engine.guardrails.policy import PolicyError, policy_file_from_env
from agent_engine.guardrails.ratelimit import RateLimits
from agent_engine.guardrails.service import policy_from_env, serve
from agent_engine.runtime import service
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings


async def main(stop: asyncio.Event) -> None:
    settings = Settings()
    try:  # a mistake in the policy file stops the service here, naming the file, tenant and field
        policy_file = policy_file_from_env()
        policy = policy_from_env(policy_file)
        limits = RateLimits.from_policy(policy_file)
        tool_policies = toolgate.ToolPolicies(policy_file)
        outputs = tenant_policies(policy_file)
    except PolicyError as exc:
        raise SystemExit(f"guardrails: {exc}") from None
    bus = await Bus.open(settings.nats_url, "guardrails")
    try:
        # three gates on their own consumers: input, tool calls, outputs (docs/guardrails.md)
        await asyncio.gather(serve(bus, policy, settings, stop, limits),
                             toolgate.serve(bus, tool_policies, settings, stop),
                             serve_outputs(bus, outputs, policy.redact, settings, stop))
    finally:
        await bus.close()


if __name__ == "__main__":
    service.run("guardrails", main)
