"""The issuer table: who refuses mail, how their rejections are recognised, where their removal process is.

Contract: `default_table()` is the table shipped in `issuers.toml` (read once).
`load_table(data)` builds a table from a mapping of that file's shape;
`table.extended(data)` returns a new table with an operator's entries merged in
(an entry whose name is already there: its lists are added to, its other keys
replaced, or the whole entry replaced with `replace = true`; a new name is
added at the end; `ours` replaced when given). Both raise `IssuerTableError`
naming the entry and key at fault; the table itself is immutable and can be
pickled (the extraction worker receives it).

Patterns are plain text matched without regard to case, `#` standing for one
digit and a space for any run of white space; a pattern that starts (ends)
with a letter or digit matches only at a word start (end). They compile to
regular expressions without repetition but `\\s+` between literals, so
matching is linear in the text and no operator's entry can make it
backtrack. This module does no matching of findings itself: `classify` and
`fragments` do, with the compiled forms here (`CompiledIssuer`,
`IssuerTable.fragment_regex`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from importlib import resources
from typing import Any, cast, get_args

from mailbot.extraction.codes import (
    Code,
    code_key,
    code_range,
    host_regex,
    literal_of,
    literals_regex,
    word_regex,
)
from mailbot.extraction.findings import KINDS, IssuerCategory, Kind

CATEGORIES: tuple[IssuerCategory, ...] = get_args(IssuerCategory)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,39}$")
MAX_PATTERN = 200
_LIST_KEYS = ("codes", "tags", "marks", "hosts")
_KEYS = frozenset({"name", "label", "category", "removal", "codes", "tags", "marks", "hosts", "kinds",
                   "phrase_kinds", "default_kind", "fragment", "replace"})
_FRAGMENT_KEYS = frozenset({"phrase", "family", "kind"})



class IssuerTableError(ValueError):
    """An issuer table entry that cannot be used; the message names the entry and the key."""


@dataclass(frozen=True)
class Fragment:
    """Words that name a code family without the code ("banned sending IP" -> 5.7.606-5.7.649)."""

    phrase: str
    family: str | None = None
    """None: the matched text is the family ("S3140")."""
    kind: Kind | None = None


@dataclass(frozen=True)
class Issuer:
    name: str
    label: str
    category: IssuerCategory
    removal: str | None = None
    codes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    marks: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    kinds: tuple[tuple[str, Kind], ...] = ()
    """(code or range, kind), first match wins."""
    phrase_kinds: tuple[tuple[str, Kind], ...] = ()
    default_kind: Kind | None = None
    fragments: tuple[Fragment, ...] = ()

    def has_code(self, status: str) -> bool:
        key = code_key(status)
        return key is not None and self.has_key(key)

    def has_key(self, key: Code) -> bool:
        """`has_code` for a status already split into numbers (`status_key`)."""
        return any(lo <= key <= hi for lo, hi in self._code_ranges)

    def kind_for(self, status: str) -> Kind | None:
        key = code_key(status)
        if key is None:
            return None
        return next((k for (lo, hi), k in self._kind_ranges if lo <= key <= hi), None)

    @cached_property
    def _code_ranges(self) -> tuple[tuple[Code, Code], ...]:
        return tuple(r for spec in self.codes if (r := code_range(spec)))

    @cached_property
    def _kind_ranges(self) -> tuple[tuple[tuple[Code, Code], Kind], ...]:
        return tuple((r, k) for spec, k in self.kinds if (r := code_range(spec)))


@dataclass(frozen=True)
class Weighted:
    """One compiled pattern of an issuer and what a match of it is worth."""

    pattern: str
    weight: int


TAG, MARK, HOST, CODE = 3, 2, 1, 4
"""Weights of the evidence kinds (see issuers.toml)."""


@dataclass(frozen=True)
class CompiledIssuer:
    issuer: Issuer
    text_regex: re.Pattern[str] | None
    """Tags, marks and fragment phrases, one named group each (`groups` maps them)."""
    groups: dict[str, Weighted] = field(default_factory=dict)
    host_regex: re.Pattern[str] | None = None
    phrase_kind_regex: re.Pattern[str] | None = None
    phrase_kinds: dict[str, Kind] = field(default_factory=dict)
    kind_literals: re.Pattern[str] | None = None
    """The lower-case text every phrase-kind pattern contains, as one plain alternation: where none of
    it is in a rejection's lower-cased text, the patterns are not run over it."""

    def may_kind(self, lowered: str) -> bool:
        return self.kind_literals is not None and self.kind_literals.search(lowered) is not None


@dataclass(frozen=True)
class IssuerTable:
    issuers: tuple[Issuer, ...]
    ours: str | None = None
    """The name of this desk's own provider (a rejection it issued is "ours")."""

    def get(self, name: str) -> Issuer | None:
        return next((i for i in self.issuers if i.name == name), None)

    def extended(self, data: Mapping[str, Any]) -> IssuerTable:
        """This table with an operator's entries (the TOML's shape: `ours`, `issuer = [...]`) merged in."""
        _only_keys(data, {"ours", "issuer"}, "issuer table")
        issuers = list(self.issuers)
        for n, entry in enumerate(_entries(data)):
            name = entry.get("name")
            where = f"issuer[{n}] ({name!r})"
            at = next((k for k, i in enumerate(issuers) if i.name == name), None)
            if at is None or entry.get("replace") is True:
                built = _issuer(entry, where)
                if at is None:
                    issuers.append(built)
                else:
                    issuers[at] = built
            else:
                issuers[at] = _merged(issuers[at], entry, where)
        ours = data.get("ours", self.ours)
        return _checked(IssuerTable(tuple(issuers), ours))

    @cached_property
    def compiled(self) -> tuple[CompiledIssuer, ...]:
        return tuple(_compile(i) for i in self.issuers)

    @cached_property
    def fragment_regex(self) -> re.Pattern[str] | None:
        """Every fragment phrase of every issuer, in table order, one named group each (see `fragment_of`)."""
        alts = [f"(?P<f{k}>{word_regex(f.phrase)})" for k, (_, f) in enumerate(self._fragments)]
        return re.compile("|".join(alts), re.I) if alts else None

    def candidates(self, lowered: str) -> set[int]:
        """Indexes of the issuers whose text or host patterns may match `lowered` (lower-cased text):
        the others need not be run over it. One search per occurrence of a pattern's literal part."""
        rx, closure = self._literal_index
        out: set[int] = set()
        if rx is None:
            return out
        m = rx.search(lowered)
        while m is not None:
            out |= closure[m.group(0)]
            # Overlapping literals ("olc.protection.outlook.com", "protection.outlook.com"): go on
            # from the next character, not from the end of this one.
            m = rx.search(lowered, m.start() + 1)
        return out

    @cached_property
    def _literal_index(self) -> tuple[re.Pattern[str] | None, dict[str, frozenset[int]]]:
        owners: dict[str, set[int]] = {}
        for n, c in enumerate(self.compiled):
            for p in [*(w.pattern for w in c.groups.values()), *c.issuer.hosts]:
                owners.setdefault(literal_of(p), set()).add(n)
        found = sorted(owners, key=len, reverse=True)
        # The longest literal found at a place hides the shorter ones that start there: it stands for them.
        closure = {lit: frozenset(n for o in owners if lit.startswith(o) for n in owners[o]) for lit in found}
        rx = re.compile("|".join(re.escape(lit) for lit in found)) if found else None
        return rx, closure

    def fragment_of(self, group: str) -> tuple[Issuer, Fragment]:
        return self._fragments[int(group[1:])]

    @cached_property
    def _fragments(self) -> tuple[tuple[Issuer, Fragment], ...]:
        return tuple((i, f) for i in self.issuers for f in i.fragments)


def load_table(data: Mapping[str, Any]) -> IssuerTable:
    """A table from a mapping of issuers.toml's shape."""
    _only_keys(data, {"ours", "issuer"}, "issuer table")
    issuers = tuple(_issuer(e, f"issuer[{n}] ({e.get('name')!r})") for n, e in enumerate(_entries(data)))
    return _checked(IssuerTable(issuers, data.get("ours")))


@cache
def default_table() -> IssuerTable:
    """The table shipped with mailbot (issuers.toml beside this module)."""
    text = resources.files("mailbot.extraction").joinpath("issuers.toml").read_text(encoding="utf-8")
    return load_table(tomllib.loads(text))


# Building and checking ----------------------------------------------------------


def _entries(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries = data.get("issuer", [])
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise IssuerTableError("issuer table: `issuer` must be a list of tables")
    return entries


def _only_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise IssuerTableError(f"{where}: must be a table")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise IssuerTableError(f"{where}: unknown key {unknown[0]!r}")


def _checked(table: IssuerTable) -> IssuerTable:
    names = [i.name for i in table.issuers]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise IssuerTableError(f"issuer {dup!r}: named twice")
    if table.ours is not None and (not isinstance(table.ours, str) or table.ours not in names):
        raise IssuerTableError(f"issuer table: ours = {table.ours!r} names no issuer")
    return table


def _issuer(entry: Mapping[str, Any], where: str) -> Issuer:
    _only_keys(entry, _KEYS, where)
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise IssuerTableError(f"{where}: name must be lower case letters, digits, '_', '-' or '.'")
    category = entry.get("category", "provider")
    if category not in CATEGORIES:
        raise IssuerTableError(f"{where}: category must be one of {', '.join(CATEGORIES)}")
    label = entry.get("label", name)
    removal = entry.get("removal")
    if not isinstance(label, str) or (removal is not None and not isinstance(removal, str)):
        raise IssuerTableError(f"{where}: label and removal must be text")
    return Issuer(
        name=name,
        label=label,
        category=cast(IssuerCategory, category),
        removal=removal,
        codes=_codes(entry.get("codes", []), f"{where}.codes"),
        tags=_patterns(entry.get("tags", []), f"{where}.tags"),
        marks=_patterns(entry.get("marks", []), f"{where}.marks"),
        hosts=_patterns(entry.get("hosts", []), f"{where}.hosts"),
        kinds=_code_kinds(entry.get("kinds", {}), f"{where}.kinds"),
        phrase_kinds=_phrase_kinds(entry.get("phrase_kinds", {}), f"{where}.phrase_kinds"),
        default_kind=_optional_kind(entry.get("default_kind"), f"{where}.default_kind"),
        fragments=_fragments(entry.get("fragment", []), f"{where}.fragment"),
    )


def _merged(old: Issuer, entry: Mapping[str, Any], where: str) -> Issuer:
    _only_keys(entry, _KEYS, where)
    # Build the entry alone to check it, then merge: lists extend, tables and scalars replace.
    given = _issuer({"name": old.name, "category": entry.get("category", old.category), **entry}, where)
    changes: dict[str, Any] = {}
    for key in _LIST_KEYS:
        if key in entry:
            changes[key] = getattr(old, key) + tuple(p for p in getattr(given, key) if p not in getattr(old, key))
    if "kinds" in entry:
        changes["kinds"] = given.kinds + old.kinds  # the operator's first: first match wins
    if "phrase_kinds" in entry:
        changes["phrase_kinds"] = given.phrase_kinds + old.phrase_kinds
    if "fragment" in entry:
        changes["fragments"] = old.fragments + given.fragments
    for key in ("label", "category", "removal", "default_kind"):
        if key in entry:
            changes[key] = getattr(given, key)
    return replace(old, **changes)


def _codes(value: Any, where: str) -> tuple[str, ...]:
    out = _strings(value, where)
    for spec in out:
        if code_range(spec) is None:
            raise IssuerTableError(f"{where}: {spec!r} is not a status code (5.7.511) or range (5.7.606-5.7.649)")
    return out


def _code_kinds(value: Any, where: str) -> tuple[tuple[str, Kind], ...]:
    if not isinstance(value, Mapping):
        raise IssuerTableError(f"{where}: must be a table of code = kind")
    _codes(list(value), where)
    return tuple((str(c), _kind(k, f"{where}.{c!r}")) for c, k in value.items())


def _phrase_kinds(value: Any, where: str) -> tuple[tuple[str, Kind], ...]:
    if not isinstance(value, Mapping):
        raise IssuerTableError(f"{where}: must be a table of pattern = kind")
    _patterns(list(value), where)
    return tuple((str(p), _kind(k, f"{where}.{p!r}")) for p, k in value.items())


def _fragments(value: Any, where: str) -> tuple[Fragment, ...]:
    if not isinstance(value, list):
        raise IssuerTableError(f"{where}: must be a list of tables")
    out: list[Fragment] = []
    for n, f in enumerate(value):
        here = f"{where}[{n}]"
        _only_keys(f, _FRAGMENT_KEYS, here)
        (phrase,) = _patterns([f.get("phrase")], f"{here}.phrase")
        family = f.get("family")
        if family is not None and (not isinstance(family, str) or not family.strip()):
            raise IssuerTableError(f"{here}.family: must be text")
        out.append(Fragment(phrase, family, _optional_kind(f.get("kind"), f"{here}.kind")))
    return tuple(out)


def _optional_kind(value: Any, where: str) -> Kind | None:
    return None if value is None else _kind(value, where)


def _kind(value: Any, where: str) -> Kind:
    if value not in KINDS:
        raise IssuerTableError(f"{where}: kind must be one of {', '.join(KINDS)}")
    return cast(Kind, value)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise IssuerTableError(f"{where}: must be a list of text")
    return tuple(value)


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    out = _strings(value, where)
    for p in out:
        literal = p.replace("#", "").replace(" ", "")
        if len(p) > MAX_PATTERN or len(literal) < 2 or p.startswith(("#", " ")):
            raise IssuerTableError(
                f"{where}: {p!r} must hold 2 to {MAX_PATTERN} characters, at least 2 of them not '#', "
                "and not start with '#' or a space"
            )
    return out


def _compile(issuer: Issuer) -> CompiledIssuer:
    groups: dict[str, Weighted] = {}
    alts: list[str] = []
    seen: set[str] = set()
    fragment_phrases = [f.phrase for f in issuer.fragments]
    for weight, patterns in ((TAG, issuer.tags), (TAG, fragment_phrases), (MARK, issuer.marks)):
        for p in patterns:
            if p.lower() in seen:
                continue
            seen.add(p.lower())
            name = f"p{len(groups)}"
            groups[name] = Weighted(p, weight)
            alts.append(f"(?P<{name}>{word_regex(p)})")
    kind_alts: list[str] = []
    phrase_kinds: dict[str, Kind] = {}
    for n, (p, kind) in enumerate(issuer.phrase_kinds):
        phrase_kinds[f"k{n}"] = kind
        kind_alts.append(f"(?P<k{n}>{word_regex(p)})")
    return CompiledIssuer(
        issuer=issuer,
        text_regex=re.compile("|".join(alts), re.I) if alts else None,
        groups=groups,
        host_regex=host_regex(issuer.hosts),
        phrase_kind_regex=re.compile("|".join(kind_alts), re.I) if kind_alts else None,
        phrase_kinds=phrase_kinds,
        kind_literals=literals_regex(p for p, _ in issuer.phrase_kinds),
    )
