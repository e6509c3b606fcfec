"""Settings from the environment, read once at start-up by each service's composition root."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class Settings:
    nats_url: str = field(default_factory=lambda: os.environ.get("AE_NATS_URL", "nats://127.0.0.1:4222"))
    postgres_url: str = field(default_factory=lambda: os.environ.get("AE_POSTGRES_URL", ""))
    ack_wait_s: float = field(default_factory=lambda: env_float("AE_ACK_WAIT_S", 30.0))
    max_deliver: int = field(default_factory=lambda: env_int("AE_MAX_DELIVER", 5))
    batch_size: int = field(default_factory=lambda: env_int("AE_BATCH_SIZE", 64))
    heartbeat_s: float = field(default_factory=lambda: env_float("AE_HEARTBEAT_S", 10.0))
    """How often a runner says it is still working on a dispatch; the router then extends its deadline."""
    router_name: str = field(default_factory=lambda: os.environ.get("AE_ROUTER_NAME", "router"))
    """Several routers may consume together; each needs its own name (it keys the relay position)."""
