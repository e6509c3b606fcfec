"""Settings from the environment, read once at start-up by each service's composition root."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from agent_engine.contracts.servers import NATS_URL_ENV, server_list
from agent_engine.runtime.secrets import CredentialError, secret


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def env_int(name: str, default: int) -> int:
    value = env_float(name, default)
    if not math.isfinite(value):  # int() of inf or nan would crash with a message naming nothing
        raise SystemExit(f"{name}={os.environ.get(name)!r} is not a whole number")
    return int(value)


def postgres_url_from_env() -> str:
    try:
        return secret("AE_POSTGRES_URL").value
    except CredentialError as exc:
        raise SystemExit(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    nats_url: str = field(default_factory=lambda: os.environ.get(NATS_URL_ENV) or "nats://127.0.0.1:4222")
    """One URL or a comma-separated list of a cluster's URLs; checked at start-up (nats_servers)."""
    postgres_url: str = field(default_factory=lambda: postgres_url_from_env())
    """AE_POSTGRES_URL, or the contents of the file AE_POSTGRES_URL_FILE (the URL carries a password)."""
    ack_wait_s: float = field(default_factory=lambda: env_float("AE_ACK_WAIT_S", 30.0))
    max_deliver: int = field(default_factory=lambda: env_int("AE_MAX_DELIVER", 5))
    batch_size: int = field(default_factory=lambda: env_int("AE_BATCH_SIZE", 32))
    """What each consumer fetches at a time (the router merges its consumers' fetches into one batch). 32 rather
    than 64 (until 2026-12-04) holds the memory per in-flight task at 256 in flight to about 35 KiB instead of 60,
    for about a twelfth less throughput there and none at 64 (docs/performance.md)."""
    heartbeat_s: float = field(default_factory=lambda: env_float("AE_HEARTBEAT_S", 10.0))
    """How often a runner says it is still working on a dispatch; the router then extends its deadline."""
    router_name: str = field(default_factory=lambda: os.environ.get("AE_ROUTER_NAME", "router"))
    """Several routers may consume together; each needs its own name (it keys the relay position)."""

    def __post_init__(self) -> None:
        nats_servers(self.nats_url)  # a malformed list stops the service at start, naming the variable


def nats_servers(value: str) -> list[str]:
    """The URLs of an AE_NATS_URL value; a malformed one stops the process with a message naming the variable."""
    try:
        return server_list(value, NATS_URL_ENV)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


STREAM_REPLICAS_ENV = "AE_STREAM_REPLICAS"
MAX_REPLICAS = 5
"""JetStream's own limit on a stream's replicas."""


def stream_replicas() -> int:
    """AE_STREAM_REPLICAS (default 1): how many servers of a NATS cluster hold each stream and KV bucket the
    services create. 3 in production (a cluster of 3 loses one server without losing a write); odd, because a
    stream needs a majority of its replicas to accept a write."""
    raw = os.environ.get(STREAM_REPLICAS_ENV, "").strip()
    if not raw:
        return 1
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_REPLICAS):
        raise SystemExit(f"{STREAM_REPLICAS_ENV}={raw!r} must be a whole number from 1 to {MAX_REPLICAS} (3 on a "
                         "3-node NATS cluster; odd numbers: a stream needs a majority of its replicas up)")
    return int(raw)


def replicas_configured() -> bool:
    """Whether AE_STREAM_REPLICAS is set: only then is an existing stream's replica count changed (as with
    retention, a process started without it never undoes what another set)."""
    return bool(os.environ.get(STREAM_REPLICAS_ENV, "").strip())


@dataclass(frozen=True)
class Retention:
    """What a JetStream stream keeps: messages younger than `max_age_s` and at most `max_bytes` in all (the
    oldest go first); 0 is no limit."""

    max_age_s: float = 0.0
    max_bytes: int = 0

    @classmethod
    def from_env(cls, prefix: str, *, max_age_days: float = 0.0, max_bytes: int = 0) -> Retention:
        """`<prefix>_MAX_AGE_DAYS` and `<prefix>_MAX_BYTES` (0: no limit); a value out of range stops the
        service with a message naming the variable."""
        days = env_float(f"{prefix}_MAX_AGE_DAYS", max_age_days)
        size = env_int(f"{prefix}_MAX_BYTES", max_bytes)
        if not (math.isfinite(days) and 0 <= days <= 36500):
            raise SystemExit(f"{prefix}_MAX_AGE_DAYS={days:g} must be a number of days from 0 (no limit) to 36500")
        if size < 0:
            raise SystemExit(f"{prefix}_MAX_BYTES={size} must be a number of bytes, or 0 (no limit)")
        return cls(days * 86400.0, size)


def retention_configured(prefix: str) -> bool:
    """Whether the environment sets a limit for the stream: only then is an existing stream changed, so a
    process started without the variables (say, agentctl in another shell) never undoes them."""
    return any(os.environ.get(f"{prefix}_{limit}") for limit in ("MAX_AGE_DAYS", "MAX_BYTES"))


def events_retention() -> Retention:
    """AE_EVENTS_MAX_AGE_DAYS, AE_EVENTS_MAX_BYTES: the event stream. No limit by default: telemetry rebuilds
    its ledger from the stream, and the router's store (not the stream) is the record."""
    return Retention.from_env("AE_EVENTS")


def dlq_retention() -> Retention:
    """AE_DLQ_MAX_AGE_DAYS (default 30), AE_DLQ_MAX_BYTES: dead letters, kept for an operator to look at."""
    return Retention.from_env("AE_DLQ", max_age_days=30.0)
