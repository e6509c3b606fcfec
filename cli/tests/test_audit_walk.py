"""The verifier's walk over records and links (cli/audit.py), without a database: a chain built as the
router builds it verifies; each kind of tampering is named as the first broken link."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from agent_engine.cli.audit import Broken, Link, Record, TaskChain, Walk, verify_chain
from agent_engine.runtime import audit

A, B = uuid.UUID(int=1 << 64 | 0xA), uuid.UUID(int=1 << 64 | 0xB)


def chain(order: list[tuple[uuid.UUID, int]], first_nid: int = 1) -> tuple[list[Record], list[Link]]:
    """Records in `order` (aggregate, version), linked as the recorder links them."""
    records, links, tasks, head = [], [], {}, audit.ZERO
    for n, (originator, version) in enumerate(order, start=first_nid):
        record = Record(n, originator, version, "topic", f"{originator}/{version}".encode())
        content = audit.record_hash(record.topic, record.state)
        linked = audit.task_link(tasks.get(originator, audit.ZERO), originator, version, n, content)
        tasks[originator] = linked
        position = n - first_nid + 1
        head = audit.global_link(head, position, n, originator, linked)
        records.append(record)
        links.append(Link(position, n, originator, version, content, linked, head))
    return records, links


ORDER = [(A, 1), (B, 1), (A, 2), (A, 3), (B, 2)]


def walk(records: list[Record | None], links: list[Link | None], checkpoints: list[audit.Checkpoint] = ()) -> str:
    w = Walk({c.position: c for c in checkpoints}, min((k.notification_id for k in links if k), default=None))
    for record, link in zip(records, links, strict=True):
        w.step(record, link)
    return w.finish().summary()


def cp(link: Link, head: bytes | None = None) -> audit.Checkpoint:
    return audit.Checkpoint("c", link.position, link.notification_id, (head or link.global_link).hex(), "t")


def test_an_untouched_chain_verifies_to_its_checkpoint() -> None:
    records, links = chain(ORDER)
    assert walk(records, links, [cp(links[3])]) == \
        "5 records of 2 tasks verified up to checkpoint 4 (1 later records not yet checkpointed)"


def test_an_edited_record_is_named() -> None:
    records, links = chain(ORDER)
    records[2] = dataclasses.replace(records[2], state=b"forged")
    with pytest.raises(Broken, match=f"^task {A} record 2 \\(notification 3\\): payload does not match its hash$"):
        walk(records, links)


def test_an_edited_link_is_named() -> None:
    records, links = chain(ORDER)
    links[4] = dataclasses.replace(links[4], global_link=bytes(32))
    with pytest.raises(Broken, match="^chain position 5 .*: its global link does not follow"):
        walk(records, links)


def test_a_checkpoint_past_the_end_means_records_were_removed() -> None:
    records, links = chain(ORDER)
    with pytest.raises(Broken, match="^checkpoint 5 .* past the end of the chain at position 4"):
        walk(records[:4], links[:4], [cp(links[4])])


def test_a_checkpoint_that_differs_means_a_rewrite() -> None:
    records, links = chain(ORDER)
    with pytest.raises(Broken, match="^the chain at position 2 differs from checkpoint 2 .* at or before it$"):
        walk(records, links, [cp(links[1], bytes(32))])


def test_records_older_than_the_chain_are_counted_and_the_chain_starts_after_them() -> None:
    old = [Record(1, A, 1, "topic", b"old"), Record(2, B, 1, "topic", b"old")]
    records, links = chain([(A, 2), (B, 2), (A, 3)], first_nid=3)
    # the recorder links a task's first chained record to zeros when the one before it has no link
    fixed, tasks, head = [], {}, audit.ZERO
    for record, link in zip(records, links, strict=True):
        linked = audit.task_link(tasks.get(record.originator_id, audit.ZERO), record.originator_id, record.version,
                                 record.notification_id, link.record_hash)
        tasks[record.originator_id] = linked
        head = audit.global_link(head, link.position, link.notification_id, record.originator_id, linked)
        fixed.append(dataclasses.replace(link, task_link=linked, global_link=head))
    assert walk([*old, *records], [None, None, *fixed]) == \
        "3 records of 2 tasks verified; no checkpoint covers them yet; 2 records stored before the audit chain " \
        "began are not covered"
    # a record without a link after the chain began was put there by someone else
    with pytest.raises(Broken, match=f"^task {A} record 1 \\(notification 1\\) is not in the chain"):
        Walk({}, chain_start=1).step(old[0], None)


def task_chain(records: list[Record], links: list[Link], originator: uuid.UUID, all_links: list[Link],
               checkpoint: audit.Checkpoint | None = None) -> TaskChain:
    mine = [k for k in links if k.originator_id == originator]
    first = min(k.position for k in mine)
    end = checkpoint.position if checkpoint else all_links[-1].position
    before = all_links[first - 2].global_link if first > 1 else audit.ZERO
    return TaskChain(originator, [r for r in records if r.originator_id == originator], mine, 1, before,
                     [k for k in all_links if first <= k.position <= end], checkpoint)


def test_one_task_verifies_through_the_global_chain_to_the_checkpoint_after_it() -> None:
    records, links = chain(ORDER)
    report = verify_chain(task_chain(records, links, A, links, cp(links[4])), "a")
    assert report.summary() == "task a: 3 records verified up to checkpoint 5"


def test_one_task_whose_neighbour_was_rewritten_fails_at_the_checkpoint() -> None:
    records, links = chain(ORDER)
    forged = [*links[:1], dataclasses.replace(links[1], task_link=bytes(32)), *links[2:]]
    with pytest.raises(Broken, match="^chain position 2 .*global link does not follow"):
        verify_chain(task_chain(records, forged, A, forged, cp(links[4])))


def test_one_task_missing_its_last_record_is_named() -> None:
    records, links = chain(ORDER)
    with pytest.raises(Broken, match=f"^task {A} record 3 \\(notification 4\\) is missing"):
        verify_chain(task_chain(records[:3] + records[4:], links, A, links))
