"""Reading every contract version this build knows: an older envelope body becomes the current one.

Applied by `Envelope` before it validates (so `Envelope.from_bytes` and `Envelope.model_validate`
accept every supported version), hence on every read: from the store, from the bus, from a query
answer. Writers only ever write the current version (`Envelope.to_wire`).

Version 1 (until 2026-12) named its engine attributes `task_id`, `correlation_id`, `causation_id` and
`schema_version`, which are not legal CloudEvents extension names, and wrote absent ones as `null`.
Version 2 spells them `taskid`, `correlationid`, `causationid`, `schemaversion`, omits absent
attributes and names the payload's JSON Schema in `dataschema`. Payloads did not change.
"""

from __future__ import annotations

from functools import cache
from typing import Any

CONTRACT_VERSION = 2
"""The version this build writes. A breaking change bumps it and adds a step to `upcast`."""

SCHEMA_URN = "urn:agent-engine:events"
"""`dataschema` of an event, and `$id` of its type's JSON Schema: `<SCHEMA_URN>:<type>:v<version>`."""


def schema_uri(event_type: str, version: int = CONTRACT_VERSION) -> str:
    """The URI naming an event type's JSON Schema (`dataschema`, and the schema's `$id`). A URN, since
    CloudEvents wants an absolute URI and the schemas are files of this repository, not pages of a host."""
    return f"{SCHEMA_URN}:{event_type}:v{version}"


@cache
def contract_types() -> frozenset[str]:
    """The event types of the contract: the ones with a JSON Schema (`router.input`, say, has none)."""
    from agent_engine.contracts.events import EVENT_TYPES  # the payloads import neither this nor the envelope

    return frozenset(EVENT_TYPES)


def is_contract_type(value: Any) -> bool:
    """Whether `value` (anything a body may hold) names an event type of the contract."""
    return isinstance(value, str) and value in contract_types()


SUPPORTED_VERSIONS = (1, 2)
"""Every version `upcast` turns into the current one."""

V1_RENAMES = {"task_id": "taskid", "correlation_id": "correlationid", "causation_id": "causationid",
              "schema_version": "schemaversion"}
"""Version 1 attribute name -> version 2 name."""

NESTED_RECORDS = {"router.input": ("input", "source"), "task.forked": ("history",)}
"""Where a record's `data` holds whole envelopes (one, or a list of them) written by the same build: a v1
record's are v1 too, and are upcast with it, so a stored v1 history reads exactly as a v2 build would
have written it (its replay compares equal)."""


def version_of(body: dict[str, Any]) -> Any:
    """The contract version a body claims: `schemaversion` (v2 on), `schema_version` (v1), or, when it
    names none, 1 if it spells any attribute the v1 way (v1 made the version optional), else current."""
    if "schemaversion" in body:
        return body["schemaversion"]
    if "schema_version" in body:
        return body["schema_version"]
    return 1 if any(name in body for name in V1_RENAMES) else CONTRACT_VERSION


def upcast(body: dict[str, Any]) -> dict[str, Any]:
    """`body` as the current version writes it; unchanged when it is current or claims a version this
    build does not know (validation then names what is wrong with it). Never modifies `body`, and never
    raises, whatever the body holds: it runs before validation, on input from anyone."""
    if version_of(body) == 1:
        return _v1_to_v2(body)
    return body


def _v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in body.items():
        new = V1_RENAMES.get(name, name)
        if new in out and name == new:
            continue  # a v2 spelling beside the v1 one: the renamed v1 value wins, as v1 read it
        out[new] = value
    out["schemaversion"] = 2
    if is_contract_type(out.get("type")):
        out["dataschema"] = schema_uri(str(out["type"]), 2)
    for optional in ("causationid", "subject"):
        if optional in out and out[optional] is None:
            del out[optional]  # v1 wrote absent attributes as null; v2 omits them
    if out.get("subject") == "":
        del out["subject"]  # CloudEvents has no empty subject; v1 never set one
    kind = out.get("type")
    nested = NESTED_RECORDS.get(kind) if isinstance(kind, str) else None
    data = out.get("data")
    if nested and isinstance(data, dict):
        data = dict(data)
        for key in nested:
            value = data.get(key)
            if isinstance(value, dict):
                data[key] = upcast(value)
            elif isinstance(value, list):
                data[key] = [upcast(v) if isinstance(v, dict) else v for v in value]
        out["data"] = data
    return out
