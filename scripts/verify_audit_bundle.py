#!/usr/bin/env python3
"""Verify an Agent Engine audit bundle offline: `python3 verify_audit_bundle.py BUNDLE.json`.

A bundle (`agentctl audit export --task ID`) holds one task's stored records, their links in the task's
hash chain, the store's global chain from the task's last link up to the first checkpoint after it, and that
checkpoint. The task's last link covers every record of the task and its place in the store's order. This
script needs Python 3.9+ and nothing else: it imports no part of the engine, so an auditor can read every
line of it. It checks that

  1. each record's bytes hash to its link's record hash;
  2. the task's links chain from its first linked record to its last, with no version missing;
  3. the global chain, recomputed from the link before the task's last one, passes through it and ends at
     the checkpoint's head, with no other record of the task on the way.

The checkpoint is what anchors the proof: compare its head (printed) with the copy of stream AE_AUDIT you
trust (`nats stream get AE_AUDIT <sequence>`). Exit status 0 when the bundle verifies, 1 when it does not
(the first broken link is named), 2 when the file is not a bundle.

Hashes (SHA-256; integers unsigned big-endian, 4 bytes for the topic length, 8 otherwise; ids as 16 bytes):
  record_hash = H("ae-audit-record-v1" | len(topic) | topic | len(state) | state)
  task_link   = H("ae-audit-task-v1"   | previous task link (or 32 zero bytes) | originator id | version
                  | notification id | record_hash)
  owner       = H("ae-audit-owner-v1"  | originator id | position)
  global_link = H("ae-audit-global-v1" | previous global link | position | notification id | owner | task_link)

Other tasks' rows in the segment show only their owner tag, so the bundle names no other task, yet a row of
this task left out of the bundle's records shows: its owner tag is this task's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import uuid

FORMAT = "agent-engine-audit-bundle/1"
ZERO = bytes(32)


class NotVerified(Exception):
    pass


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def u(n: int, size: int = 8) -> bytes:
    return n.to_bytes(size, "big")


def record_hash(topic: str, state: bytes) -> bytes:
    name = topic.encode("utf-8")
    return sha256(b"ae-audit-record-v1", u(len(name), 4), name, u(len(state)), state)


def task_link(previous: bytes, originator: uuid.UUID, version: int, notification_id: int, record: bytes) -> bytes:
    return sha256(b"ae-audit-task-v1", previous, originator.bytes, u(version), u(notification_id), record)


def owner(originator: uuid.UUID, position: int) -> bytes:
    return sha256(b"ae-audit-owner-v1", originator.bytes, u(position))


def global_link(previous: bytes, position: int, notification_id: int, owned_by: bytes, task: bytes) -> bytes:
    return sha256(b"ae-audit-global-v1", previous, u(position), u(notification_id), owned_by, task)


def verify(bundle: dict) -> str:
    """A one-line account of what verified; raises NotVerified naming the first broken link."""
    if bundle.get("format") != FORMAT:
        raise ValueError(f"not an audit bundle of format {FORMAT}")
    task = bundle["task_id"]
    originator = uuid.UUID(bundle["originator_id"])
    start = bundle.get("chain_start")
    links = {k["version"]: k for k in bundle["links"]}

    # 1 and 2: the task's records against its links and its own chain
    previous, last_version, recomputed, covered, unchained = None, 0, {}, 0, 0
    for record in sorted(bundle["records"], key=lambda r: r["version"]):
        version, nid = record["version"], record["notification_id"]
        here = f"task {task} record {version} (notification {nid})"
        link = links.get(version)
        if link is None:
            if start is None or nid < start:
                unchained += 1
                last_version = version
                continue
            raise NotVerified(f"{here} is not in the chain: it was added, or moved, outside the router")
        if version != last_version + 1:
            raise NotVerified(f"task {task} record {last_version + 1} is missing (before {here})")
        if link["notification_id"] != nid:
            raise NotVerified(f"{here} was linked at notification {link['notification_id']}: records were reordered")
        content = record_hash(record["topic"], base64.b64decode(record["state"]))
        if content.hex() != link["record_hash"]:
            raise NotVerified(f"{here}: payload does not match its hash")
        linked = task_link(previous or ZERO, originator, version, nid, content)
        if linked.hex() != link["task_link"]:
            raise NotVerified(f"{here}: its link does not follow from the record before it")
        recomputed[link["position"]] = linked.hex()
        previous, last_version, covered = linked, version, covered + 1
    missing = sorted(set(links) - {r["version"] for r in bundle["records"]})
    if missing:
        k = links[missing[0]]
        raise NotVerified(f"task {task} record {k['version']} (notification {k['notification_id']}) is missing")

    # 3: the global chain from the task's last link (which covers all before it) to the checkpoint
    segment = bundle["segment"]["links"]
    if not recomputed:
        raise NotVerified(f"task {task} has no linked record in the bundle")
    last = max(recomputed)
    if not segment or segment[0]["position"] != last:
        start = segment[0]["position"] if segment else None
        raise NotVerified(f"the global segment starts at chain position {start}, but the task's last link in the "
                          f"bundle is at {last}: a record of the task is left out, or the segment was cut")
    head = bytes.fromhex(bundle["segment"]["before"])
    position = last - 1
    for link in segment:
        if link["position"] != position + 1:
            raise NotVerified(f"chain position {position + 1} is missing from the segment")
        ours = owner(originator, link["position"]).hex() == link["owner"]
        if link["position"] == last and (not ours or link["task_link"] != recomputed[last]):
            raise NotVerified(f"chain position {last} does not hold the task's last link")
        if link["position"] != last and ours:
            raise NotVerified(f"chain position {link['position']} holds a record of task {task} that the bundle "
                              "leaves out")
        head = global_link(head, link["position"], link["notification_id"], bytes.fromhex(link["owner"]),
                           bytes.fromhex(link["task_link"]))
        if head.hex() != link["global_link"]:
            raise NotVerified(f"chain position {link['position']}: its global link does not follow from the one "
                              "before")
        position = link["position"]
    checkpoint = bundle.get("checkpoint")
    if checkpoint is None:
        return (f"ok: task {task}: {covered} records verified up to chain position {position}, head {head.hex()}; "
                "no checkpoint covered them when exported, so nothing outside the store anchors this yet")
    if checkpoint["position"] != position or checkpoint["head"] != head.hex():
        raise NotVerified(f"the chain at position {position} (head {head.hex()}) does not reach checkpoint "
                          f"{checkpoint['position']} (head {checkpoint['head']})")
    text = (f"ok: task {task}: {covered} records verified up to checkpoint {checkpoint['position']}, head "
            f"{checkpoint['head']}, published {checkpoint['time']} (stream AE_AUDIT sequence "
            f"{checkpoint['stream_sequence']}, chain {checkpoint['chain']}): compare it with your copy of the stream")
    if unchained:
        text += f"; {unchained} records stored before the audit chain began are not covered"
    return text


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            bundle = json.load(f)
        text = verify(bundle)
    except NotVerified as exc:
        print(f"broken: {exc}")
        return 1
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        print(f"not a readable audit bundle: {exc!r}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
