"""Import rules of the package, checked on its source with `ast` so they stay true (issue #14):

- no module imports a private name (`_x`) of another mailbot module, or reaches into one
  (`module._x`, `Class._x`, `obj._method` where `_method` is defined only in another module);
- `mailbot/extraction/` is pure: it imports nothing from the rest of mailbot;
- only the entry points (`cli`, `__main__`) import `mailbot.cli` or `mailbot.daemon`;
- only `mailbot.desk.tickets` assigns a ticket's state;
- only the wiring (`app`, `daemon`, the CLI, the portal's entry and its checks) sees the whole
  `Config`; every other module is handed the sections it reads;
- `ls mailbot/` reads as the flow: a handful of top-level modules, every other module in its
  part, each part saying its contract in its docstring, and no module above 400 lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mailbot"
ENTRY_POINTS = {"mailbot.cli", "mailbot.__main__"}


@dataclass
class Module:
    name: str
    tree: ast.Module
    imports: list[tuple[str, str | None, int]] = field(default_factory=list)  # module, name, line
    private_defs: set[str] = field(default_factory=set)  # private names this module defines


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _load() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" in rel.parts:  # alembic scripts are loaded by alembic, not imported
            continue
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        mod = Module(".".join(parts), ast.parse(path.read_text(), str(path)))
        here = parts if is_package else parts[:-1]
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import):
                mod.imports += [(a.name, None, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                mod.imports += [(target, a.name, node.lineno) for a in node.names]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
                mod.private_defs.add(node.name)
            elif isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.ctx, ast.Store):
                mod.private_defs.add(node.attr)
            elif isinstance(node, ast.Name) and _private(node.id) and isinstance(node.ctx, ast.Store):
                mod.private_defs.add(node.id)
        modules[mod.name] = mod
    return modules


MODULES = _load()


def _entry_point(name: str) -> bool:
    return name in ENTRY_POINTS or name.startswith("mailbot.cli.")


def _ours(target: str) -> bool:
    return target == "mailbot" or target.startswith("mailbot.")


def test_the_walk_sees_the_package() -> None:
    # A walker that found nothing would pass every rule below.
    assert {"mailbot.cli", "mailbot.desk.worker", "mailbot.extraction.extract"} <= MODULES.keys()
    assert any(_ours(t) for t, _, _ in MODULES["mailbot.desk.worker"].imports)


def test_no_module_imports_a_private_name_of_another() -> None:
    found = [f"{m.name}:{line} imports {name} from {target}"
             for m in MODULES.values() for target, name, line in m.imports
             if _ours(target) and target != m.name
             and (_private(name or "") or any(_private(p) for p in target.split(".")))]
    assert found == []


def test_no_module_reaches_into_a_private_of_another() -> None:
    """`x._name` where `_name` is private to another mailbot module. `self`/`cls` are the class's
    own business; a private name that this module defines too is its own (the walker has no
    types, so a name private in two modules is taken as local)."""
    elsewhere: dict[str, set[str]] = {}
    for m in MODULES.values():
        for name in m.private_defs:
            elsewhere.setdefault(name, set()).add(m.name)
    found = []
    for m in MODULES.values():
        for node in ast.walk(m.tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = elsewhere.get(node.attr, set())
            if owners and node.attr not in m.private_defs:
                found.append(f"{m.name}:{node.lineno} {ast.unparse(node)} (private to {sorted(owners)})")
    assert found == []


def test_extraction_imports_nothing_from_the_rest_of_mailbot() -> None:
    found = [f"{m.name}:{line} imports {target}"
             for m in MODULES.values() if m.name.startswith("mailbot.extraction")
             for target, name, line in m.imports
             if _ours(target) and not (target == "mailbot.extraction" or target.startswith("mailbot.extraction."))]
    assert found == []


@pytest.mark.parametrize("entry", ["mailbot.cli", "mailbot.daemon"])
def test_only_entry_points_import_the_cli_or_the_daemon(entry: str) -> None:
    parent, _, leaf = entry.rpartition(".")
    found = [f"{m.name}:{line}"
             for m in MODULES.values() if not _entry_point(m.name) and m.name != entry
             for target, name, line in m.imports
             if target == entry or target.startswith(entry + ".") or (target == parent and name == leaf)]
    assert found == []


def test_only_the_tickets_module_changes_a_ticket_s_state() -> None:
    """Every state change goes through `tickets.change_state`, so each leaves a from/to event the
    digest and `show` read; an assignment elsewhere would change a ticket without a trace."""
    offenders = []
    for module in _load().values():
        if module.name == "mailbot.desk.tickets":
            continue
        for node in ast.walk(module.tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and t.attr == "state" and isinstance(t.value, ast.Name) \
                            and t.value.id in ("ticket", "t", "tk"):
                        offenders.append(f"{module.name}:{node.lineno}")
    assert offenders == []


TOP_LEVEL = {"__init__", "__main__", "app", "clock", "daemon", "errors", "faults", "identity", "logs",
             "metrics", "processes"}
PARTS = {"cli", "config", "desk", "extraction", "listing", "outgoing", "portal", "source", "staffing", "store"}
MAX_LINES = 400


def test_the_top_level_holds_only_what_every_part_shares() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules <= TOP_LEVEL, f"new top-level modules {sorted(modules - TOP_LEVEL)}: put them in their part"
    assert parts <= PARTS and {"desk", "extraction", "outgoing", "source", "staffing", "store", "cli"} <= parts


def test_every_part_states_its_contract() -> None:
    for part in sorted(PACKAGE.iterdir()):
        if (part / "__init__.py").exists():
            doc = ast.get_docstring(ast.parse((part / "__init__.py").read_text()))
            assert doc and len(doc) > 80, f"mailbot/{part.name}/__init__.py says nothing of its contract"


def test_no_module_grows_past_one_job() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if "migrations" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_mail_is_written_in_one_place() -> None:
    """One mailer: a mail composed or queued anywhere but `outgoing.mailer` would bypass the
    From, the Auto-Submitted rule and the ticket header that every mail gets there."""
    found = [f"{m.name}:{line} imports {name} from {target}"
             for m in MODULES.values() if m.name != "mailbot.outgoing.mailer"
             for target, name, line in m.imports
             if (target, name) in {("mailbot.outgoing.render", "compose"), ("mailbot.outgoing.outbox", "queue")}]
    assert found == []


WIRING = {"mailbot.app", "mailbot.daemon", "mailbot.config", "mailbot.portal", "mailbot.portal.service",
          "mailbot.portal.checks"}
"""Where the configuration file is taken apart into the sections each part reads. The portal's
`Portal` is the second front door's own wiring (its process has no `Desk`)."""


def test_only_the_wiring_sees_the_whole_configuration() -> None:
    """A part handed `Config` could read any key (the mailbox's password, the database URL):
    it gets its sections instead, so what it depends on is in its signature."""
    seen = {f"{m.name}:{line}" for m in MODULES.values() for target, name, line in m.imports
            if target == "mailbot.config" and name == "Config" and m.name not in WIRING
            and not m.name.startswith(("mailbot.cli", "mailbot.config"))}
    assert seen == set()
    assert any(name == "Config" for target, name, _ in MODULES["mailbot.app"].imports if target == "mailbot.config")
