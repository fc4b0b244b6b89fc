"""`mailbot listing ...`: staff manage the desk's own list (the `table` source) on the command line.

    mailbot listing add 203.0.113.45 --category spam --reason "trap hits"
    mailbot listing remove 203.0.113.45 --reason "cleaned up, confirmed by phone"
    mailbot listing show 203.0.113.45          # the listing and its history (--json for scripts)
    mailbot listing import listings.csv        # all rows or none (csvfile.py)
    mailbot listing export > listings.csv

The group is registered by `mailbot.cli`; it reads the config path the root command was
given. Commands that write bring the schema up to date, `show` and `export` never change
it. Everything printed for a person passes `sanitize.printable`. Errors end as the rest of
the CLI's do: one line and the exit code of their branch (`mailbot.errors`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailbot import clock
from mailbot.config import Config, database_url, load
from mailbot.errors import EXIT_UNREACHABLE, MailbotError
from mailbot.listing import admin, csvfile, table
from mailbot.listing.base import aware
from mailbot.outgoing.sanitize import printable
from mailbot.store.engine import create_schema, fault_line, is_fault, make_engine, require_schema
from mailbot.store.listing_tables import ListingEntry, ListingHistory

F = TypeVar("F", bound=Callable[..., Any])


def _config() -> Config:
    return load(click.get_current_context().find_root().obj["config_path"])


def _errors(fn: F) -> F:
    """One line and the error's exit code, as `mailbot.cli.operator_errors` does for its commands."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MailbotError as e:
            click.echo(f"mailbot: {printable(e.operator_line(), one_line=True)}", err=True)
            sys.exit(e.exit_code)
        except Exception as e:
            if not is_fault(e):
                raise
            try:
                url = database_url(_config())
            except Exception:
                url = ""
            click.echo(f"mailbot: {fault_line(url, e)}", err=True)
            sys.exit(EXIT_UNREACHABLE)

    return wrapper  # type: ignore[return-value]


@contextmanager
def _engine(write: bool) -> Iterator[tuple[Config, Engine]]:
    config = _config()
    engine = make_engine(database_url(config))
    try:
        (create_schema if write else require_schema)(engine)
        if config.listing.source != "table":
            what = f"source = {config.listing.source!r}" if config.listing.source else "no [listing] source"
            click.echo(f"mailbot: warning: the config has {what}: the desk does not ask this table", err=True)
        yield config, engine
    finally:
        engine.dispose()


def _actor() -> str:
    import getpass

    try:
        return f"{getpass.getuser()} (command line)"
    except Exception:
        return "command line"


def _line(value: object) -> str:
    return printable(value if value is not None else "-", one_line=True)


@click.group("listing")
def listing() -> None:
    """The desk's own block list (the "table" listing source): add, remove, show, import, export.

    \b
    Example:
      mailbot listing add 203.0.113.45 --category spam --reason "trap hits"
      mailbot listing show 203.0.113.45
    """


@listing.command()
@click.argument("network")
@click.option("--category", help="What kind of listing (spam, botnet, ...).")
@click.option("--reason", help="Why, for staff: never shown to a sender unless a template asks for it.")
@click.option("--source", "origin", help="Where the listing came from (traps, complaints, ...).")
@click.option("--since", help="When it was listed (ISO 8601, UTC when no offset); default now.")
@_errors
def add(network: str, category: str | None, reason: str | None, origin: str | None, since: str | None) -> None:
    """List an IP or a network (CIDR).

    \b
    Example:
      mailbot listing add 203.0.113.45 --category spam --reason "hit our traps 40 times"
      mailbot listing add 198.51.100.0/24 --category botnet --source complaints
    """
    new = csvfile.new_listing(network, category, reason, origin, since)
    with _engine(write=True) as (config, engine):
        entry = admin.add(engine, new, _actor())
        click.echo(f"listed {entry.network} since {clock.local(entry.since, config.desk.zone)}")


@listing.command()
@click.argument("network")
@click.option("--reason", required=True, help="Why it is delisted, kept in the history.")
@_errors
def remove(network: str, reason: str) -> None:
    """Delist an IP or a network (exactly as it was listed).

    \b
    Example:
      mailbot listing remove 203.0.113.45 --reason "cleaned up, confirmed by phone"
    """
    net = admin.parse_network(network)
    with _engine(write=True) as (_cfg, engine):
        entry = admin.remove(engine, net, _actor(), reason)
        click.echo(f"delisted {entry.network}")


def _show_dict(net: str, entries: list[ListingEntry], history: list[ListingHistory]) -> dict[str, Any]:
    def iso(dt: Any) -> str | None:
        return aware(dt).isoformat(timespec="seconds").replace("+00:00", "Z") if dt else None

    return {
        "query": net, "listed": bool(entries),
        "listings": [{"network": e.network, "since": iso(e.since), "category": e.category, "reason": e.reason,
                      "source": e.origin, "added_by": e.added_by} for e in entries],
        "history": [{"at": iso(h.at), "action": h.action, "network": h.network, "ip": h.ip, "actor": h.actor,
                     "why": h.why, "category": h.category, "source": h.origin, "since": iso(h.since),
                     "key": h.idempotency_key} for h in history],
    }


@listing.command()
@click.argument("network")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@_errors
def show(network: str, as_json: bool) -> None:
    """Show an IP's (or network's) listing and its history.

    \b
    Example:
      mailbot listing show 203.0.113.45
    """
    net = admin.parse_network(network)
    with _engine(write=False) as (config, engine), Session(engine) as session:
        entries = table.entries_overlapping(session, net)
        history = table.history_overlapping(session, net)
        if as_json:
            click.echo(json.dumps(_show_dict(str(net), entries, history), indent=1))
            return
        zone = config.desk.zone
        name = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if not entries:
            click.echo(f"{name}: not listed")
        for e in entries:
            click.echo(f"{name}: listed as {e.network} since {clock.local(e.since, zone)}, "
                       f"category {_line(e.category)}, source {_line(e.origin)}, added by {_line(e.added_by)}")
            click.echo(f"  reason (staff only): {_line(e.reason)}")
        delistings = [h for h in history if h.action == "delisted"]
        if delistings:
            click.echo(f"delisted before: {len(delistings)} time(s), last {clock.local(delistings[-1].at, zone)}")
        click.echo("history:" if history else "history: none")
        for h in history:
            key = f"  key {_line(h.idempotency_key)}" if h.idempotency_key else ""
            click.echo(f"  {clock.local(h.at, zone)}  {h.action:<10}  {h.network}  by {_line(h.actor)}"
                       f"  {_line(h.why)}{key}")


@listing.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_errors
def import_(file: Path) -> None:
    """Add the listings of a CSV file (network,category,reason,source,since); all rows or none.

    \b
    Example:
      mailbot listing import listings.csv
    """
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise admin.TableError(f"{file} is not UTF-8 text") from None
    rows = csvfile.read(text)
    with _engine(write=True) as (_cfg, engine):
        added, already = admin.import_rows(engine, rows, _actor())
    note = f" ({len(already)} already listed, left as they are: {', '.join(already[:10])}" \
           f"{' ...' if len(already) > 10 else ''})" if already else ""
    click.echo(f"imported {len(added)} listing(s) from {printable(file, one_line=True)}{note}")


@listing.command()
@_errors
def export() -> None:
    """Write every current listing as CSV to stdout (what `import` reads).

    \b
    Example:
      mailbot listing export > listings.csv
    """
    with _engine(write=False) as (_cfg, engine), Session(engine) as session:
        csvfile.write(admin.all_entries(session), sys.stdout)
