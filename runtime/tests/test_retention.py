"""Stream retention from the environment, applied to streams that already exist (a real nats-server)."""

from __future__ import annotations

import pytest

from agent_engine.contracts.subjects import DLQ_STREAM, STREAM
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Retention, dlq_retention, events_retention
from agent_engine.runtime.streams import ensure_streams

DAY = 86400.0


def test_retention_is_read_from_the_environment_with_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AE_EVENTS_MAX_AGE_DAYS", "AE_EVENTS_MAX_BYTES", "AE_DLQ_MAX_AGE_DAYS", "AE_DLQ_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    assert events_retention() == Retention(0.0, 0)
    assert dlq_retention() == Retention(30 * DAY, 0)
    monkeypatch.setenv("AE_EVENTS_MAX_AGE_DAYS", "7")
    monkeypatch.setenv("AE_EVENTS_MAX_BYTES", "1073741824")
    assert events_retention() == Retention(7 * DAY, 1 << 30)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AE_DLQ_MAX_AGE_DAYS", "-1", "AE_DLQ_MAX_AGE_DAYS=-1 must be a number of days from 0"),
    ("AE_DLQ_MAX_AGE_DAYS", "a week", "AE_DLQ_MAX_AGE_DAYS='a week' is not a number"),
    ("AE_DLQ_MAX_BYTES", "-5", "AE_DLQ_MAX_BYTES=-5 must be a number of bytes, or 0"),
])
def test_a_bad_retention_setting_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                          message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        dlq_retention()


@pytest.mark.integration
async def test_existing_streams_take_the_configured_retention(nats_url: str) -> None:
    bus = await Bus.open(nats_url, "retention-test")
    try:
        await ensure_streams(bus.js, events=Retention(400 * DAY, 0), dlq=Retention(2 * DAY, 1 << 30))
        events, dlq = (await bus.js.stream_info(STREAM)).config, (await bus.js.stream_info(DLQ_STREAM)).config
        assert events.max_age == pytest.approx(400 * DAY) and (events.max_bytes or -1) == -1
        assert dlq.max_age == pytest.approx(2 * DAY) and dlq.max_bytes == 1 << 30
        assert events.subjects == ["ae.*.>"] and events.duplicate_window == pytest.approx(120.0)  # the rest kept
        await ensure_streams(bus.js)  # no variable set: an existing stream keeps what it was given
        assert (await bus.js.stream_info(STREAM)).config.max_age == pytest.approx(400 * DAY)
    finally:
        await ensure_streams(bus.js, events=events_retention(), dlq=dlq_retention())  # the defaults again
        restored = (await bus.js.stream_info(STREAM)).config
        await bus.close()
    assert (restored.max_age or 0.0) == 0.0
