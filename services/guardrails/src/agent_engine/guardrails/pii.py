"""Personal data in a request's input: which kinds guardrails finds, how it tells a real number from a look-alike,
and the redaction of every string leaf. Pure: text in, text and counts out.

A kind with a checksum (card: Luhn; IBAN: ISO 7064 mod 97) or a structure `ipaddress` can check is redacted only
when the candidate passes, so order numbers and version strings stay; a kind without one (email, phone, national
ids) is a pattern with its invalid ranges written into it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    """A check of a candidate the pattern found; None: every match counts."""
    separators: str = ""
    """Characters a candidate may be cut at when it fails its check as a whole: a card number followed by other
    digits ('4111 1111 1111 1111 12 items') is still found."""


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def card_valid(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    return 13 <= len(digits) <= 19 and luhn(digits)


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def phone_valid(candidate: str) -> bool:
    # E.164 numbers have at most 15 digits: a longer run is a card or account number, never a phone
    return 7 <= sum(ch.isdigit() for ch in candidate) <= 15


def _ip_valid(version: int) -> Callable[[str], bool]:
    def valid(candidate: str) -> bool:
        try:
            return ipaddress.ip_address(candidate).version == version
        except ValueError:
            return False
    return valid


def _ipv6_valid(candidate: str) -> bool:
    # '::' alone or a clock time like 12:30:45 is no address worth redacting: ipaddress rejects the time, and an
    # address must have at least two groups with digits in them
    return _ip_valid(6)(candidate) and len(re.findall(r"[0-9a-f]+", candidate, re.I)) >= 2


DETECTORS: tuple[Detector, ...] = (
    # checksum kinds first: a card number would otherwise be taken for a phone number
    Detector("card", re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])"), card_valid, " -"),
    Detector("iban", re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?!\w)"), iban_valid, " "),
    # US social security number: area 000, 666 and 900-999, group 00 and serial 0000 are never issued
    Detector("ssn", re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")),
    # UK national insurance number: the prefixes HMRC never issues (BG GB NK KN TN NT ZZ, D F I Q U V first,
    # D F I O Q U V second) excluded; suffix A-D
    Detector("nino", re.compile(r"(?<!\w)(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                                r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)")),
    Detector("ipv6", re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)?(?![\w:])"),
             _ipv6_valid),
    Detector("ipv4", re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)"), _ip_valid(4)),
    # starts only where a run of address characters starts: without the lookbehind a long run with no '@' would
    # be scanned again from each of its characters (quadratic time on a 1 MiB request)
    Detector("email", re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    # not followed by a word character or a decimal part; a sentence's full stop may follow
    Detector("phone", re.compile(r"(?<![\w.])\+?\d[\d ().-]{6,}\d(?!\w|\.\d)"), phone_valid),
)
KINDS: dict[str, Detector] = {d.kind: d for d in DETECTORS}
DEFAULT_REDACT = ("email", "phone", "card", "iban")
"""What is redacted when neither AE_GUARDRAILS_REDACT nor the policy file says otherwise."""


def custom(kind: str, pattern: str) -> Detector:
    """A tenant's own kind (`input.custom_pii`): every match counts."""
    return Detector(kind, re.compile(pattern))


def detectors(kinds: Iterable[str], extra: Iterable[Detector] = ()) -> tuple[Detector, ...]:
    """The built-in detectors of `kinds` in their fixed order (checksum kinds first), then the custom ones."""
    wanted = set(kinds)
    return tuple(d for d in DETECTORS if d.kind in wanted) + tuple(extra)


def redact_text(text: str, found: tuple[Detector, ...], counts: dict[str, int]) -> str:
    for detector in found:
        text = _redact_one(text, detector, counts)
    return text


def redact(value: Any, found: tuple[Detector, ...], counts: dict[str, int]) -> Any:
    """Replace every valid match in string leaves (and object keys) with `[redacted:<kind>]`; counts per kind."""
    if isinstance(value, str):
        return redact_text(value, found, counts)
    if isinstance(value, dict):
        return {redact_text(k, found, counts): redact(v, found, counts) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, found, counts) for v in value]
    return value


def _redact_one(text: str, detector: Detector, counts: dict[str, int]) -> str:
    placeholder = f"[redacted:{detector.kind}]"

    def replace(match: re.Match[str]) -> str:
        candidate = match.group()
        if detector.valid is None or detector.valid(candidate):
            counts[detector.kind] = counts.get(detector.kind, 0) + 1
            return placeholder
        cut = _longest_valid_prefix(candidate, detector)
        if cut:
            counts[detector.kind] = counts.get(detector.kind, 0) + 1
            return placeholder + candidate[cut:]
        return candidate

    return detector.pattern.sub(replace, text)


def _longest_valid_prefix(candidate: str, detector: Detector) -> int:
    """The end of the longest prefix, cut at a separator, that passes the check; 0 when none does."""
    if detector.valid is None or not detector.separators:
        return 0
    for end in range(len(candidate) - 1, 0, -1):
        if candidate[end] in detector.separators and detector.valid(candidate[:end]):
            return end
    return 0
