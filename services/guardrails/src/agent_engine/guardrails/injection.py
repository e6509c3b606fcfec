"""Prompt-injection and jailbreak detection: a rule set of patterns with scores over a normalised text of every
string of the input. Pure: the input and the rules in, the rules that matched and the total score out.

The rules look for the attacker's *instruction* ("ignore the previous instructions"), not for single words: an
innocent text says "please ignore the typo" or "you are now subscribed", and a weak rule (score under the
threshold) only refuses a request together with another one.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

RULE_ID = re.compile(r"^injection\.[a-z0-9][a-z0-9_-]{0,62}$")
ZERO_WIDTH = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
"""Characters that show nothing (zero-width spaces and joiners, soft hyphens, direction marks): an attacker puts
them inside words so that 'ig\u200bnore' does not read as 'ignore'."""
SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Rule:
    id: str
    pattern: re.Pattern[str]
    score: float


@dataclass
class Scan:
    """What matched: rule id -> count, and the total score (each rule's score counted once)."""

    counts: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return round(sum(self.scores.values()), 4)


def normalise(text: str) -> str:
    """NFKC (full-width and ligature look-alikes become plain letters), zero-width characters removed, case-folded,
    whitespace collapsed to one space."""
    text = ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))
    return SPACE.sub(" ", text.casefold()).strip()


def _rule(rule_id: str, pattern: str, score: float) -> Rule:
    return Rule(rule_id, re.compile(pattern), score)


_OVERRIDE = r"(?:ignore|disregard|forget|override|bypass|skip|drop)"
_FILLER = r"(?:all|any|every|everything|of|the|your|my|these|those)"
_EARLIER = r"(?:previous|prior|above|earlier|preceding|foregoing|initial|original|system|developer)"
_ORDERS = r"(?:instructions?|prompts?|rules|directives|guidelines|guardrails|programming|constraints)"
# every repetition is bounded and the word lists do not overlap: a pattern that could split a run of words
# between two quantifiers in many ways would take polynomial time over an input repeating them

DEFAULT_RULES: tuple[Rule, ...] = (
    _rule("injection.ignore-previous",
          rf"\b{_OVERRIDE} (?:{_FILLER} ){{0,4}}(?:{_EARLIER} ){{1,3}}(?:(?:the|your|of) ){{0,2}}{_ORDERS}\b"
          rf"|\b{_OVERRIDE} (?:all|any|every) (?:of )?(?:(?:the|your|my|these|those) )?(?:{_EARLIER} )?{_ORDERS}\b",
          0.9),
    _rule("injection.reveal-system-prompt",
          r"\b(?:reveal|show|print|repeat|output|display|leak|dump|expose|tell me|give me|what (?:is|are|was|were))"
          r" (?:me )?(?:your|the) (?:(?:full|entire|original|hidden|initial|secret|exact|complete) ){0,3}"
          r"(?:system (?:prompt|message|instructions)|(?:initial|hidden|original|secret) (?:prompt|instructions)"
          r"|developer (?:prompt|message))\b"
          r"|\b(?:reveal|repeat|print|output|leak|dump) your (?:instructions|prompt|rules)\b"
          r"|\brepeat (?:all )?(?:the )?(?:text|words|everything) above\b", 0.8),
    _rule("injection.do-anything-now", r"\b(?:stands? for|called|named|means) \W?do anything now\b|\bdan mode\b"
          r"|\b(?:act as|you are|pretend to be|become|be) dan\b", 0.9),
    _rule("injection.role-play",
          r"\b(?:pretend|act|behave|role-?play|imagine)(?: that)?(?: to be| as if| as| like)?(?: you(?:'re| are))?"
          r" (?:an? |the )?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|amoral|unaligned|"
          r"unethical)(?: \w+)?(?: ai| assistant| model| chatbot| bot| persona| version)\b", 0.8),
    _rule("injection.jailbreak-mode",
          r"\b(?:developer|god|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|sudo) mode\b", 0.5),
    _rule("injection.no-restrictions",
          r"\b(?:without|free (?:of|from)|no longer (?:bound|restricted) by|ignoring) (?:any |all |your )?"
          r"(?:restrictions|filters|content polic(?:y|ies)|safety (?:rules|guidelines|filters)|ethical guidelines|"
          r"moral (?:constraints|guidelines))\b", 0.5),
    _rule("injection.you-are-now", r"\byou are now\b|\bfrom now on,? you(?: are|'re| will| must| shall)\b", 0.3),
    _rule("injection.fake-delimiter",
          r"<\|?(?:im_start|im_end|system|assistant|endoftext|eot_id|start_header_id)\|?>|\[/?(?:inst|system)\]"
          r"|<<\s?/?sys\s?>>|(?:^|[\s\]>}])(?:#{2,}|\*\*|\[|<)\s?(?:system|assistant|developer)\s?(?:\]|>|\*\*|:)"
          r"|^(?:system|assistant)\s?:", 0.8),
    _rule("injection.new-instructions",
          r"\b(?:new|updated|real|actual|true|secret) (?:system )?instructions?\s?:|\bsystem override\b", 0.5),
    _rule("injection.encoded-instruction",
          r"\b(?:decode|base64[- ]decode|rot13|reverse|deobfuscate|unscramble)\b.{0,80}\b(?:and|then)"
          r" (?:follow|execute|run|obey|do what)\b", 0.8),
)
ENCODED = "injection.encoded-instruction"
BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
MAX_DECODED = 16
"""Base64 runs per string leaf decoded and scanned again: an instruction hidden in base64 is one."""


def strings(value: Any) -> Iterator[str]:
    """Every string leaf of a JSON value, and its object keys, without recursion."""
    todo = [value]
    while todo:
        current = todo.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict):
            todo.extend(current.keys())
            todo.extend(current.values())
        elif isinstance(current, list):
            todo.extend(current)


def scan(value: Any, rules: Iterable[Rule]) -> Scan:
    ruleset = tuple(rules)
    found = Scan()
    for text in strings(value):
        _scan_text(normalise(text), ruleset, found)
        if any(r.id == ENCODED for r in ruleset):
            for decoded in _decoded(text):
                inner = Scan()
                _scan_text(normalise(decoded), ruleset, inner)
                if inner.counts:
                    _hit(found, next(r for r in ruleset if r.id == ENCODED), 1)
    return found


def _scan_text(text: str, rules: tuple[Rule, ...], found: Scan) -> None:
    for rule in rules:
        n = len(rule.pattern.findall(text))
        if n:
            _hit(found, rule, n)


def _hit(found: Scan, rule: Rule, n: int) -> None:
    found.counts[rule.id] = found.counts.get(rule.id, 0) + n
    found.scores[rule.id] = rule.score


def _decoded(text: str) -> Iterator[str]:
    for i, match in enumerate(BASE64.finditer(text)):
        if i == MAX_DECODED:
            return
        run = match.group()
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if all(ch.isprintable() or ch.isspace() for ch in decoded):
            yield decoded


def rules_for(extra: Iterable[Rule], disabled: Iterable[str]) -> tuple[Rule, ...]:
    """The default rules less the disabled ones, plus a tenant's own (which replace a default of the same id)."""
    own = tuple(extra)
    off = set(disabled) | {r.id for r in own}
    return tuple(r for r in DEFAULT_RULES if r.id not in off) + own
