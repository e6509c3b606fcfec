"""Rate limits: the pure GCRA decision, the keys a request counts against, and the policy section."""

from __future__ import annotations

import pytest

from agent_engine.guardrails.policy import PolicyError, PolicyFile
from agent_engine.guardrails.ratelimit import Limit, RateLimits, counted, gcra, reason


def test_a_burst_passes_then_the_next_request_waits_one_interval() -> None:
    limit = Limit(rate=10, per_s=60, burst=3)  # one request every 6 s, three at once
    tat = None
    for _ in range(3):
        decision = gcra(limit, tat, now=100.0)
        assert decision.allowed
        tat = decision.tat
    refused = gcra(limit, tat, now=100.0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(6.0)
    assert refused.tat == tat  # nothing counted
    assert gcra(limit, tat, now=106.0).allowed  # after the wait it passes


def test_an_idle_key_is_a_fresh_key() -> None:
    limit = Limit(rate=1, per_s=10, burst=1)
    assert gcra(limit, 50.0, now=1000.0) == gcra(limit, None, now=1000.0)


def test_burst_defaults_to_rate() -> None:
    assert Limit(rate=5, per_s=1).capacity == 5


def test_keys_per_scope_hash_who_it_is() -> None:
    limits = RateLimits.from_policy(PolicyFile.parse({"defaults": {"rate_limits": {
        "tenant": {"rate": 100, "per_s": 60}, "user": {"rate": 10, "per_s": 60}, "session": {"rate": 3, "per_s": 1}}}}))
    keys = counted(limits.of("acme"), "acme", "jane@example.com", None)
    assert [k.scope for k in keys] == ["tenant", "user"]
    assert keys[0].key == "acme.tenant"
    assert keys[1].key.startswith("acme.user.") and "jane" not in keys[1].key
    assert [k.scope for k in counted(limits.of("acme"), "acme", None, "s-1")] == ["tenant", "session"]


def test_a_tenant_section_replaces_the_defaults_scope_by_scope() -> None:
    limits = RateLimits.from_policy(PolicyFile.parse({
        "defaults": {"rate_limits": {"tenant": {"rate": 100, "per_s": 60}, "user": {"rate": 10, "per_s": 60}}},
        "tenants": {"acme": {"rate_limits": {"user": {"rate": 1, "per_s": 1}}}}}))
    assert limits.of("acme").user == Limit(rate=1, per_s=1)
    assert limits.of("acme").tenant == Limit(rate=100, per_s=60)
    assert limits.of("other").user == Limit(rate=10, per_s=60)
    assert limits.any and not RateLimits().any


@pytest.mark.parametrize(("section", "expected"), [
    ({"tenant": {"rate": 0, "per_s": 1}}, "tenant.rate: Input should be greater than or equal to 1"),
    ({"user": {"rate": 1, "per_s": 1, "bursts": 2}}, "user.bursts: Extra inputs are not permitted"),
    ({"team": {"rate": 1, "per_s": 1}}, "team: Extra inputs are not permitted"),
    ({"tenant": {"rate": 1, "per_s": 86400, "burst": 2}}, "longer than the 86400 s"),
])
def test_a_bad_section_stops_the_service_naming_where(section: dict[str, object], expected: str) -> None:
    policy = PolicyFile.parse({"tenants": {"acme": {"rate_limits": section}}}, "policy.yaml")
    with pytest.raises(PolicyError) as err:
        RateLimits.from_policy(policy)
    assert "policy.yaml: tenants.acme.rate_limits" in str(err.value) and expected in str(err.value)


def test_the_reason_names_the_limit_and_the_wait() -> None:
    assert reason("user", Limit(rate=10, per_s=60, burst=2), 5.5) == (
        "rate limited: this user (requested_by) may send 10 requests per 60 s (burst 2); retry after 5.5 s")
