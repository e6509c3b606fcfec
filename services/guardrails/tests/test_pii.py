"""PII kinds: a checksum-valid number is redacted, a look-alike stays; custom patterns per tenant."""

from __future__ import annotations

import pytest

from agent_engine.guardrails import pii

ALL = pii.detectors(pii.KINDS)
NO_PHONE = pii.detectors(k for k in pii.KINDS if k != "phone")
"""The phone pattern takes any 7-15 digits: the look-alikes of other kinds are checked without it."""


def redacted(text: str, found: tuple[pii.Detector, ...] = ALL) -> tuple[str, dict[str, int]]:
    counts: dict[str, int] = {}
    return pii.redact_text(text, found, counts), counts


@pytest.mark.parametrize("card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
                                  "3782 822463 10005", "5555555555554444", "6011 0009 9013 9424"])
def test_a_luhn_valid_card_number_is_redacted(card: str) -> None:
    assert redacted(f"pay with {card} today") == ("pay with [redacted:card] today", {"card": 1})


def test_an_invalid_card_number_stays() -> None:
    text = "order 4111 1111 1111 1112 shipped"
    assert redacted(text) == (text, {})


def test_a_card_number_followed_by_other_digits_is_still_found() -> None:
    assert redacted("card 4111 1111 1111 1111 12 items") == ("card [redacted:card] 12 items", {"card": 1})


@pytest.mark.parametrize("iban", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606"])
def test_a_checksum_valid_iban_is_redacted(iban: str) -> None:
    assert redacted(f"IBAN {iban}.") == ("IBAN [redacted:iban].", {"iban": 1})


def test_an_iban_with_a_wrong_check_digit_stays() -> None:
    text = "IBAN DE88 3704 0044 0532 0130 00"
    out, counts = redacted(text)
    assert "iban" not in counts and "DE88 3704" in out


def test_an_iban_followed_by_words_in_capitals() -> None:
    assert redacted("DE89 3704 0044 0532 0130 00 AND MORE")[0] == "[redacted:iban] AND MORE"


@pytest.mark.parametrize(("text", "kind"), [("SSN 123-45-6789", "ssn"), ("NINO AB 12 34 56 C", "nino"),
                                            ("NINO JG103759A", "nino"), ("host 192.168.1.20 down", "ipv4"),
                                            ("host 2001:db8::8a2e:370:7334 down", "ipv6"),
                                            ("host fe80::1 down", "ipv6")])
def test_national_ids_and_addresses(text: str, kind: str) -> None:
    out, counts = redacted(text)
    assert counts == {kind: 1}, (out, counts)
    assert f"[redacted:{kind}]" in out


@pytest.mark.parametrize("text", ["SSN 000-12-3456", "SSN 666-12-3456", "SSN 912-12-3456", "SSN 123-00-4567",
                                  "SSN 123-45-0000", "NINO BG 12 34 56 A", "NINO DA123456A", "at 999.1.1.1",
                                  "meet at 12:30:45", "version 1.2.3", "ratio 3:2"])
def test_numbers_never_issued_and_look_alikes_stay(text: str) -> None:
    assert redacted(text, NO_PHONE) == (text, {})


def test_phone_numbers_have_at_most_fifteen_digits() -> None:
    found = pii.detectors(["phone"])
    assert redacted("call +44 20 7946 0958", found)[1] == {"phone": 1}
    assert redacted("ref 1234 5678 9012 3456 789", found)[1] == {}


def test_custom_patterns_use_their_id_in_the_placeholder() -> None:
    found = pii.detectors(["email"], [pii.custom("employee-id", r"EMP-\d{6}")])
    assert redacted("EMP-123456 wrote to a@b.io", found) == ("[redacted:employee-id] wrote to [redacted:email]",
                                                            {"employee-id": 1, "email": 1})


def test_nested_values_and_keys() -> None:
    counts: dict[str, int] = {}
    out = pii.redact({"a@b.io": ["4111111111111111", 3, {"x": "ok"}]}, ALL, counts)
    assert out == {"[redacted:email]": ["[redacted:card]", 3, {"x": "ok"}]}
    assert counts == {"email": 1, "card": 1}


@pytest.mark.parametrize("unit", ["1", "a", "a.", "1-", "DE", "1 ", "a:", "QUJD"])
def test_a_long_run_without_a_match_is_read_once(unit: str) -> None:
    """Every pattern starts only where its run starts: a 256 KiB run is scanned in linear time (a pattern that
    restarted at each character would take hours over a 1 MiB request; this test would not finish)."""
    text = unit * (256 * 1024 // len(unit))
    assert redacted(text, ALL)[1] == {}
