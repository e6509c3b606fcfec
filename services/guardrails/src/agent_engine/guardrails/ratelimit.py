"""Rate limits per tenant, user (`requested_by`) and session: the policy file's `rate_limits:` section and the pure
decision (GCRA, the generic cell rate algorithm). The state it needs per key is one number, the theoretical
arrival time of the next request (TAT), which ratestore.py keeps in a NATS KV bucket shared by every replica.

    rate_limits:
      tenant:  {rate: 100, per_s: 60, burst: 20}   # 100 requests a minute, 20 of them at once
      user:    {rate: 10, per_s: 60}               # burst defaults to rate
      session: {rate: 3, per_s: 1, burst: 3}

GCRA with emission interval T = per_s / rate lets a request through when, after it, the TAT is at most
T × burst ahead of now; otherwise the request is refused and may come back when that is true again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent_engine.guardrails.policy import PolicyFile

BUCKET_TTL_S = 24 * 3600.0
"""How long the bucket keeps a key after its last write: an idle key goes, and a key that is gone reads as a
fresh one, which is right once its TAT has passed. So no limit may remember longer (T × burst ≤ this)."""
SCOPES = ("tenant", "user", "session")


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: int = Field(ge=1)
    """Requests allowed per `per_s` seconds, on average."""
    per_s: float = Field(gt=0)
    burst: int | None = Field(default=None, ge=1)
    """Requests that may come at once; default `rate`."""

    @property
    def interval_s(self) -> float:
        return self.per_s / self.rate

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.rate

    @model_validator(mode="after")
    def _fits_the_bucket(self) -> Limit:
        if self.interval_s * self.capacity > BUCKET_TTL_S:
            raise ValueError(f"remembers {self.interval_s * self.capacity:g} s of requests (per_s / rate × burst), "
                             f"longer than the {BUCKET_TTL_S:g} s the rate-limit bucket keeps an idle key")
        return self


class RateLimitSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Limit | None = None
    user: Limit | None = None
    session: Limit | None = None


def read_section(policy: PolicyFile, tenant: str | None) -> RateLimitSection:
    return policy.read("rate_limits", tenant, RateLimitSection)


@dataclass(frozen=True)
class RateLimits:
    """Every tenant's limits, read once at start."""

    defaults: RateLimitSection = field(default_factory=RateLimitSection)
    tenants: dict[str, RateLimitSection] = field(default_factory=dict)

    @classmethod
    def from_policy(cls, policy: PolicyFile) -> RateLimits:
        return cls(read_section(policy, None), {t: read_section(policy, t) for t in policy.tenants})

    def of(self, tenant: str) -> RateLimitSection:
        return self.tenants.get(tenant, self.defaults)

    @property
    def any(self) -> bool:
        sections = [self.defaults, *self.tenants.values()]
        return any(getattr(s, scope) is not None for s in sections for scope in SCOPES)


@dataclass(frozen=True)
class Counted:
    """One limit a request counts against: its scope, its KV key and the limit."""

    scope: str
    key: str
    limit: Limit


def counted(limits: RateLimitSection, tenant: str, user: str | None, session: str | None) -> list[Counted]:
    """The keys a request counts against. A user or session id is hashed into its key: KV keys allow few
    characters, and the bucket need not hold who the users are."""
    found = []
    for scope, who in (("tenant", tenant), ("user", user), ("session", session)):
        limit = getattr(limits, scope)
        if limit is None or who is None:
            continue
        key = f"{tenant}.tenant" if scope == "tenant" else f"{tenant}.{scope}.{_digest(who)}"
        found.append(Counted(scope, key, limit))
    return found


def _digest(who: str) -> str:
    return hashlib.sha256(who.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tat: float
    """The new TAT to store when allowed (else the one read)."""
    retry_after_s: float = 0.0


def gcra(limit: Limit, tat: float | None, now: float) -> Decision:
    """Let one request through at `now` given the stored TAT (None: a fresh key), or say when it may come back."""
    start = now if tat is None else max(tat, now)
    new_tat = start + limit.interval_s
    over = new_tat - now - limit.interval_s * limit.capacity
    if over > 1e-9:
        return Decision(False, tat if tat is not None else now, over)
    return Decision(True, new_tat)


def reason(scope: str, limit: Limit, retry_after_s: float) -> str:
    who = {"tenant": "the tenant", "user": "this user (requested_by)", "session": "this session"}[scope]
    return (f"rate limited: {who} may send {limit.rate} requests per {limit.per_s:g} s (burst {limit.capacity}); "
            f"retry after {retry_after_s:.1f} s")
