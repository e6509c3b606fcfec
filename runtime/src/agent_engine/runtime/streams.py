"""The streams and KV buckets the engine runs on: made when missing (by whom: runtime/streamowner.py), with the
retention and replica count the environment sets, and an existing one brought to them where a process may."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from agent_engine.contracts.subjects import DLQ_STREAM, STREAM, STREAM_SUBJECTS, TOOL_CALLS_BUCKET, dlq_subject
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.runtime.settings import (
    Retention,
    dlq_retention,
    events_retention,
    replicas_configured,
    retention_configured,
    stream_replicas,
)
from agent_engine.runtime.streamowner import ROUTER_BUCKETS, creates_streams, wait_for_streams

log = logging.getLogger(__name__)

TOOL_CALLS_TTL_S = 30 * 86400.0
"""How long a side-effecting tool call is remembered: longer than any task keeps re-dispatching a node."""


async def ensure_streams(js: JetStreamContext, events: Retention | None = None, dlq: Retention | None = None) -> None:
    """Create the event stream, the DLQ stream and the tool-call bucket if they are missing, each stream
    with its retention (given, else from the environment: settings.events_retention, dlq_retention) and
    AE_STREAM_REPLICAS replicas. An existing stream takes a retention given here or set in the environment, and
    the replica count when AE_STREAM_REPLICAS is set. Safe to call more than once and from more than one process. Of
    the services only the router's credential may create them (runtime/streamowner.py): Bus.open has the others wait."""
    for config, keep, enforce in (
        (StreamConfig(name=STREAM, subjects=STREAM_SUBJECTS, storage=StorageType.FILE, duplicate_window=120.0),
         events or events_retention(), events is not None or retention_configured("AE_EVENTS")),
        (StreamConfig(name=DLQ_STREAM, subjects=[dlq_subject(">")], storage=StorageType.FILE),
         dlq or dlq_retention(), dlq is not None or retention_configured("AE_DLQ")),
    ):
        config.max_age, config.max_bytes = keep.max_age_s, keep.max_bytes or -1
        await ensure_stream(js, config, keep if enforce else None)
    await ensure_bucket(js, KeyValueConfig(bucket=TOOL_CALLS_BUCKET, history=1, ttl=TOOL_CALLS_TTL_S,
                                           storage=StorageType.FILE))


async def ensure_stream(js: JetStreamContext, config: StreamConfig, keep: Retention | None = None) -> None:
    """Create the stream with `config` and AE_STREAM_REPLICAS replicas when it is missing. An existing one keeps
    its settings except the retention `keep` (when given) and its replica count (when AE_STREAM_REPLICAS is set)."""
    config.num_replicas = stream_replicas()
    try:
        info = await js.stream_info(config.name or "")
    except NotFoundError:
        try:
            await js.add_stream(config)
        except APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise _create_error(config.name or "", config.num_replicas, exc) from exc
        return
    await _update(js, info.config, keep, config.num_replicas if replicas_configured() else None)


async def ensure_bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """The KV bucket, created with `config` and AE_STREAM_REPLICAS replicas when missing (one of the router's,
    streamowner.ROUTER_BUCKETS, only by the router or the platform: another service waits for it); an existing
    bucket takes the replica count when AE_STREAM_REPLICAS is set."""
    config.replicas = stream_replicas()
    credential = credential_from_env()
    if config.bucket in ROUTER_BUCKETS and not creates_streams(credential):  # the router makes it
        await wait_for_streams(js, credential.user if credential else "this process", (f"KV_{config.bucket}",))
    try:
        kv = await js.key_value(config.bucket)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(config)
        except APIError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise _create_error(f"KV_{config.bucket}", config.replicas, exc) from exc
            return await js.key_value(config.bucket)
    if replicas_configured():
        info = await js.stream_info(f"KV_{config.bucket}")
        await _update(js, info.config, None, config.replicas)
    return kv


async def apply_replicas(js: JetStreamContext, *streams: str) -> None:
    """Give each of `streams` that exists AE_STREAM_REPLICAS replicas, when the variable is set: what agentctl
    does with the platform credential for the streams no service may edit or look up but their own."""
    if not replicas_configured():
        return
    for name in streams:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            continue
        await _update(js, info.config, None, stream_replicas())


STREAM_NAME_IN_USE = 10058
"""JetStream's error code for creating a stream that exists (with other settings): another process was first."""
NO_PLACEMENT = 10005
"""Fewer servers are up than the stream's replicas."""
NOT_CLUSTERED = 10074
"""Replicas asked of a server that is not in a cluster."""


def _create_error(name: str, replicas: int, exc: APIError) -> BaseException:
    """What a failed create means for AE_STREAM_REPLICAS: a single server never takes more than one replica, so
    that stops the process; too few servers up may pass (a node restarting), so the caller retries."""
    if exc.err_code == NOT_CLUSTERED:
        return SystemExit(f"AE_STREAM_REPLICAS={replicas}, but the NATS server is not part of a cluster "
                          f"({exc.description}): set AE_STREAM_REPLICAS=1 (or leave it unset) for a single server")
    if exc.err_code == NO_PLACEMENT:
        return RuntimeError(f"NATS cannot place stream {name} on {replicas} servers ({exc.description}): fewer "
                            f"are up than AE_STREAM_REPLICAS={replicas} (more than the cluster has, or some down)")
    return exc


async def _update(js: JetStreamContext, current: StreamConfig, keep: Retention | None, replicas: int | None) -> None:
    """Change an existing stream's limits to `keep` and its replica count to `replicas` (each when given and
    different; nothing else of it). A process that may not edit streams (a service: only the platform may)
    logs that the platform must apply it."""
    changes = []
    if keep is not None:
        age, size = current.max_age or 0.0, current.max_bytes if (current.max_bytes or 0) > 0 else 0
        if abs(age - keep.max_age_s) >= 0.001 or size != keep.max_bytes:
            current.max_age, current.max_bytes = keep.max_age_s, keep.max_bytes or -1
            changes.append(f"keeps {_describe(keep)}")
    if replicas is not None and (current.num_replicas or 1) != replicas:
        current.num_replicas = replicas
        changes.append(f"has {replicas} replicas")
    if not changes:
        return
    try:
        # a refused edit (no permission) is never answered: wait a little, not the context's full timeout
        await asyncio.wait_for(js.update_stream(current), UPDATE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001  a service may not edit streams: the platform applies it
        log.warning("cannot change stream %s so that it %s (%s): set the same variables in agentctl's "
                    "environment and run it, whose platform credential may (docs/operations.md)",
                    current.name, " and ".join(changes), exc or type(exc).__name__)
        return
    log.info("stream %s now %s", current.name, " and ".join(changes))


UPDATE_TIMEOUT_S = 5.0


def _describe(keep: Retention) -> str:
    age = f"{keep.max_age_s / 86400:g} days" if keep.max_age_s else "any age"
    size = f"at most {keep.max_bytes} bytes" if keep.max_bytes else "any size"
    return f"messages of {age}, {size}"
