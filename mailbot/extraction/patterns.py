"""Line-level matching: SMTP reply codes, enhanced status codes, IPs.

Contract: `find_code(text)` returns the first rejection code in a piece of
rejection text (reply code and/or RFC 3463 status) with its offset, or None.
`rejection_ips(text)` returns the IPs a rejection text *names*, in order,
skipping those that only locate a relay or connection: `host[IP] said:`,
`Server at host (IP) returned`, `IP:25`, qmail's narration and Yahoo's
`- 4.16.55.1;` error tag; at most `MAX_IPS` of them. Pure functions over
strings, linear in their length.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# RFC 3463: class.subject.detail, class in {2,4,5}; only 4/5 are refusals.
_STATUS = r"[45]\.\d{1,3}\.\d{1,3}"
_REPLY = r"[45][0-5]\d"

# "550 5.7.606", "550-5.7.1", "#550 5.1.1", "501: 5.1.8", "550-'5.2.2", "421\n 4.7.0" (unwrapped).
_BOTH = re.compile(
    rf"(?<![\w.\-/=%])(?<!\d:)#?({_REPLY})(?:[ \-]|:[ ]?|[ ]\#|\-\#)[ ]?['\"(]?#?({_STATUS})(?![\w.]|-\w)"
)
_STATUS_ONLY = re.compile(rf"(?<![\w.\-/=%])(?<!\d:)#?\(?({_STATUS})(?![\w.%/]|-\w|\.\d)")
# A bare reply code must look like the start of a reply: followed by a word,
# an address or a bracket, not by a unit ("550 bytes") or a digit.
_REPLY_ONLY = re.compile(
    rf"(?<![\w.\-/=%$#,+])(?<!\d:)#?({_REPLY})(?:[ \-]|:\s|,)"
    r"(?=\s*(?:[\"'<\[(A-Za-z#*:]|-\s*[A-Za-z]))"
    r"(?!\s*(?:bytes|octets|times|seconds|days|hours|minutes|mb|kb|messages)\b)",
    re.I,
)


@dataclass(frozen=True)
class Code:
    reply: str | None
    status: str | None
    start: int


def find_code(text: str) -> Code | None:
    """The refusal code of a piece of rejection text.

    A reply code written with its enhanced code ("550 5.7.1", "550-5.7.1")
    wins wherever it is; otherwise the first reply code and the first
    enhanced code are taken separately ("550 sorry, no mailbox (#5.1.1)").
    `start` is where the rejection starts: the earlier of the two.
    """
    m = _BOTH.search(text)
    if m:
        return Code(m.group(1), m.group(2), m.start())
    r = _REPLY_ONLY.search(text)
    s = _STATUS_ONLY.search(text)
    if r is None and s is None:
        return None
    starts = [x.start() for x in (r, s) if x is not None]
    return Code(r.group(1) if r else None, s.group(1) if s else None, min(starts))


def has_code(text: str) -> bool:
    return find_code(text) is not None


_V4 = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.]*\w)(?!\.\d)")
_V6 = re.compile(r"(?<![\w:.])((?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:|\d{1,3}(?:\.\d{1,3}){3}))(?![\w:])")

# Contexts where an IP only locates a relay or a connection, not the refused sender.
_RELAY_AFTER = re.compile(r"^\s*[\])]\s*(?:said|says|returned|responded|replied|refused|:)", re.I)
# Postfix writes a host as name[address]: "connect to mx.example.com[IP]: ...".
_HOSTNAME_BEFORE = re.compile(r"[\w\-]+\.[\w\-.]*[A-Za-z][\w\-]*\[$")
_PORT_AFTER = re.compile(r"^[\])]?:\d{1,5}\b")
_QMAIL_AFTER = re.compile(r"^\s+(?:does not like recipient|failed after I sent)", re.I)
_QMAIL_BEFORE = re.compile(r"giving up on\s+$", re.I)
_TAG_BEFORE = re.compile(r"(?:^|\s)-\s*$")  # Yahoo: "... complaints - 4.16.55.1; see ..."


def _valid(candidate: str) -> str | None:
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _names_relay(before: str, after: str) -> bool:
    if _PORT_AFTER.match(after) or _QMAIL_AFTER.match(after) or _QMAIL_BEFORE.search(before):
        return True
    if _TAG_BEFORE.search(before) and after.startswith(";"):
        return True
    if _HOSTNAME_BEFORE.search(before) and after.startswith("]"):
        return True
    return bool(before.rstrip().endswith(("[", "(")) and _RELAY_AFTER.match(after))


MAX_IPS = 32
"""IPs reported per rejection text: a line names one; junk can name a hundred thousand."""


def rejection_ips(text: str) -> list[str]:
    """IPs named by the rejection text, first-named first, without duplicates, the first `MAX_IPS`."""
    found: list[tuple[int, str]] = []
    for rx in (_V4, _V6):
        # The first MAX_IPS distinct of each family hold the first MAX_IPS of both.
        seen: set[str] = set()
        for m in rx.finditer(text):
            ip = _valid(m.group(1))
            if ip is None or (
                rx is _V6 and "." in m.group(1) and "::ffff:" not in m.group(1).lower() and m.group(1).count(":") < 2
            ):
                continue
            before = text[max(0, m.start(1) - 60) : m.start(1)]
            after = text[m.end(1) : m.end(1) + 40]
            if _names_relay(before, after):
                continue
            if ip not in seen and len(seen) == MAX_IPS:
                break
            seen.add(ip)
            found.append((m.start(1), ip))
    # A dict keeps the first-named order; a list's `in` made thousands of IPs quadratic.
    out: dict[str, None] = {}
    for _, ip in sorted(found):
        out.setdefault(ip)
    return list(out)[:MAX_IPS]
