"""The artifact store: content-addressed objects in each tenant's NATS object store bucket.

A runner stores an output field too large for an event here (`offload`) and puts a reference in its place;
the consumer that needs the content (the agent-runner building the next prompt, the output gate checking it)
fetches it back (`resolve`). The router only ever sees references. The object's name is its sha256, so the
same content is stored once per tenant; its bytes are checked against that hash whenever they are read. An
output bound for the output gate, which deletes it once it stored a redacted version, is stored under a name of
its dispatch instead (contracts.artifacts.dispatch_object): deleting it takes nothing from any other record.

Reading uses only `$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_<tenant>` (the object's metadata, then each chunk
by sequence), the one right a tenant credential gets on its own bucket (runtime/auth.py), so another
tenant's `agentctl artifact get` is refused by the server. nats-py's own streaming read (`ObjectStore.get(name,
writeinto=...)`) needs a consumer, a right a tenant has not, so `open` streams those chunk reads instead: what
writes the bytes on (`agentctl artifact get`, the dashboard's download) holds one chunk at a time; the
agent-runner and the output gate need the whole content (a prompt, a redaction) and read it whole (`get`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, StorageType
from nats.js.errors import NotFoundError, ObjectNotFoundError

from agent_engine.contracts.artifacts import (
    DEFAULT_MAX_BYTES,
    DEFAULT_THRESHOLD,
    ArtifactRef,
    artifact_id,
    as_ref,
    bucket_of,
    decode,
    dispatch_object,
    encode,
    is_dispatch_copy,
    located,
    locator,
    object_name,
    too_large,
)
from agent_engine.runtime.settings import stream_replicas

THRESHOLD_ENV = "AE_ARTIFACT_THRESHOLD"
MAX_BYTES_ENV = "AE_ARTIFACT_MAX_BYTES"


class ArtifactError(Exception):
    """An artifact that cannot be stored or read (too large, missing, damaged); the message says which."""


def _unanswered(tenant: str) -> ArtifactError:
    """The server answers a request it refuses with nothing (the refusal goes to the connection's error
    callback), so a refusal looks like a timeout: name the usual cause, a tenant the keyring does not serve
    (runtime/auth.py opens the buckets of served tenants only)."""
    return ArtifactError(f"the artifact bucket of tenant '{tenant}' ({bucket_of(tenant)}) did not answer: the "
                         "server refuses it to a credential that may not use it (a service: the tenant is not "
                         f"served; declare it with `agentctl tenant declare {tenant}` or issue it a "
                         "credential, docs/security.md)")


def _env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number of bytes") from None
    if value < 1024:
        raise SystemExit(f"{name}={value} is under 1024 bytes")
    return value


def threshold() -> int:
    return _env_bytes(THRESHOLD_ENV, DEFAULT_THRESHOLD)


def max_bytes() -> int:
    return _env_bytes(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)


async def checked(chunks: AsyncIterable[bytes], content_id: str, size: int, what: str) -> AsyncIterator[bytes]:
    """`chunks` passed on as they come, hashed on the way, except the last, which follows only once all of
    them hash to `content_id` and add up to `size`; else ArtifactError. So a reader writing them on never
    gets the whole of damaged content: a download ends short, a file is not put in place (the CLI)."""
    digest, count, held = hashlib.sha256(), 0, None
    async for chunk in chunks:
        if held is not None:
            yield held
        digest.update(chunk)
        count, held = count + len(chunk), chunk
    got = "sha256:" + digest.hexdigest()
    if got != content_id or count != size:
        raise ArtifactError(f"{what} is damaged: its bytes hash to {got}"
                            + ("" if count == size else f" ({count} bytes where {size} were stored)"))
    if held is not None:
        yield held


class ArtifactStore:
    def __init__(self, js: JetStreamContext, *, threshold_bytes: int | None = None,
                 max_artifact_bytes: int | None = None) -> None:
        self.js = js
        self.threshold = threshold_bytes if threshold_bytes is not None else threshold()
        self.max_bytes = max_artifact_bytes if max_artifact_bytes is not None else max_bytes()

    async def put(self, tenant: str, content: bytes, media_type: str, name: str, *,
                  dispatch: str | None = None) -> ArtifactRef:
        """Store `content` for `tenant` unless it is there already; its reference either way. With `dispatch`
        (an output the output gate will check) under that dispatch's own name rather than the shared one."""
        if len(content) > self.max_bytes:
            raise ArtifactError(f"{name} is {len(content) / 1048576:.1f} MiB, over the "
                                f"{self.max_bytes / 1048576:.1f} MiB an artifact may be ({MAX_BYTES_ENV})")
        content_id = artifact_id(content)
        ref = ArtifactRef(artifact=content_id, size=len(content), media_type=media_type,
                          name=name[:300],  # a label only: a long field name or path is cut, never refused
                          object=None if dispatch is None else dispatch_object(content_id, dispatch))
        bucket = bucket_of(tenant)
        try:
            store = await self.js.object_store(bucket)
        except NatsTimeoutError:
            raise _unanswered(tenant) from None
        except NotFoundError:
            raise ArtifactError(f"tenant '{tenant}' has no artifact bucket ({bucket}); the router creates it when "
                                "one of the tenant's tasks starts") from None
        key = ref.object or object_name(ref.artifact)
        try:
            await store.get_info(key)
            return ref  # same content (of the same dispatch), stored once
        except ObjectNotFoundError:
            pass
        await store.put(key, content, meta=ObjectMeta(name=key, description=media_type))
        return ref

    async def ensure_bucket(self, tenant: str) -> None:
        """Create the tenant's bucket unless it exists. Only the router does (when a tenant's task starts): the
        services that store artifacts may not create streams, as a right to create one is a right to create any
        (a stream on another tenant's inbox subjects, say), and NATS cannot narrow it to a prefix of a name."""
        from nats.js.api import ObjectStoreConfig
        bucket = bucket_of(tenant)
        try:
            await self.js.stream_info("OBJ_" + bucket)
        except NotFoundError:
            await self.js.create_object_store(bucket, ObjectStoreConfig(
                bucket=bucket, storage=StorageType.FILE, replicas=stream_replicas(),
                description="Agent Engine artifacts of one tenant, named by sha256 (docs/observability.md)"))

    async def get(self, tenant: str, ref_id: str) -> bytes:
        """The bytes of artifact `ref_id` of `tenant` (an id, or a dispatch copy's locator), checked against the
        content's id."""
        _, chunks = await self.open(tenant, ref_id)
        return b"".join([chunk async for chunk in chunks])

    async def open(self, tenant: str, ref_id: str) -> tuple[int, AsyncIterator[bytes]]:
        """The size of artifact `ref_id` of `tenant` and its bytes chunk by chunk (128 KiB each as stored), for
        a reader that writes them on. A missing artifact is refused here, before any byte; damaged content
        raises ArtifactError instead of giving its last chunk (`checked`)."""
        content_id, key = located(ref_id)
        stream = "OBJ_" + bucket_of(tenant)
        meta_subject = f"$O.{bucket_of(tenant)}.M.{base64.urlsafe_b64encode(key.encode()).decode()}"
        try:
            meta = json.loads((await self.js.get_last_msg(stream, meta_subject)).data or b"{}")
        except NotFoundError:
            raise ArtifactError(f"tenant '{tenant}' has no artifact {ref_id}") from None
        except NatsTimeoutError:
            raise _unanswered(tenant) from None
        if meta.get("deleted") or not meta.get("nuid"):
            raise ArtifactError(f"tenant '{tenant}' has no artifact {ref_id}")
        size = int(meta.get("size") or 0)
        read = self._chunks(stream, f"$O.{bucket_of(tenant)}.C.{meta['nuid']}", size)
        return size, checked(read, content_id, size, f"artifact {ref_id} of tenant '{tenant}'")

    async def _chunks(self, stream: str, subject: str, size: int) -> AsyncIterator[bytes]:
        read, seq = 0, 1
        while read < size:
            # one chunk at a time by sequence: the same right as the metadata, no consumer to create
            try:
                msg = await self.js.get_msg(stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return  # fewer bytes than the metadata says: `checked` reports it
            read += len(msg.data or b"")
            seq = (msg.seq or seq) + 1
            yield msg.data or b""

    async def offload(self, tenant: str, output: dict[str, Any], name: str, *,
                      dispatch: str | None = None) -> dict[str, Any]:
        """`output` with each field too large for an event (contracts.artifacts.too_large) stored and replaced
        by its reference; the same dict when nothing is. `dispatch` as for `put`."""
        fields = too_large(output, self.threshold)
        if not fields:
            return output
        changed = dict(output)
        for key in fields:
            content, media_type = encode(output[key])
            changed[key] = (await self.put(tenant, content, media_type, f"{name}.{key}",
                                           dispatch=dispatch)).model_dump()
        return changed

    async def resolve(self, tenant: str, value: Any) -> Any:
        """`value` with every artifact reference in it replaced by the content it stands for."""
        ref = as_ref(value)
        if ref is not None:
            return decode(await self.get(tenant, locator(ref)), ref.media_type)
        if isinstance(value, dict):
            return {k: await self.resolve(tenant, v) for k, v in value.items()}
        if isinstance(value, list):
            return [await self.resolve(tenant, v) for v in value]
        return value

    async def delete(self, tenant: str, copy: str) -> None:
        """Delete one dispatch's own copy (the output gate's, once it stored a redacted version); gone already is
        fine. Shared content is refused: other records of the tenant may name it (only `forget` removes it)."""
        if not is_dispatch_copy(copy):
            raise ValueError(f"'{copy}' is shared content, not one dispatch's copy: it is never deleted alone")
        try:
            store = await self.js.object_store(bucket_of(tenant))
            await store.delete(located(copy)[1])
        except (NotFoundError, ObjectNotFoundError):
            pass

    async def forget(self, tenant: str) -> int:
        """Delete the tenant's bucket; the number of artifacts it held (0 when it had none)."""
        stream = "OBJ_" + bucket_of(tenant)
        try:
            info = await self.js.stream_info(stream, subjects_filter=f"$O.{bucket_of(tenant)}.M.>")
        except NotFoundError:
            return 0
        await self.js.delete_stream(stream)
        return len(info.state.subjects or {})
