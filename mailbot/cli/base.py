"""The command line. Exit codes: 0 ok, 1 a check or command failed,
2 configuration error, 3 a server or the database could not be reached.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, get_args

import click

from mailbot import __version__
from mailbot.config import Config, Security, load
from mailbot.errors import EXIT_UNREACHABLE, MailbotError
from mailbot.store.engine import fault_line, is_fault

F = TypeVar("F", bound=Callable[..., Any])

SECURITY: tuple[Security, ...] = get_args(Security)


def fail(message: str, code: int) -> None:
    click.echo(f"mailbot: {message}", err=True)
    sys.exit(code)


def operator_errors(fn: F) -> F:
    """Turn the errors an operator can act on into one line and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MailbotError as e:
            fail(e.operator_line(), e.exit_code)
        except Exception as e:
            # a damaged, unreachable or full database, wherever a command met it: one line, not a traceback
            if not is_fault(e):
                raise
            fail(fault_line(configured_database(), e), EXIT_UNREACHABLE)

    return wrapper  # type: ignore[return-value]


def configured_database() -> str:
    """The database URL of the command's config (the fault that needs it came after loading it)."""
    from mailbot.config import database_url

    try:
        return database_url(load(click.get_current_context().find_root().obj["config_path"]))
    except Exception:
        return ""


def held_line(r: Any) -> str:
    """One line for a flush the outgoing server stopped: the server, user and setting, and what waits."""
    return (f"{r.fault}; {r.held} mail(s) held in the outbox, none failed: they go out when the server "
            "works again")


def warn_held(r: Any) -> None:
    """After a command that queued mail: say so when it could not be sent yet (the command still succeeded)."""
    if r.fault:
        click.echo(f"mailbot: not sent yet: {held_line(r)}", err=True)


def config_of(ctx: click.Context) -> Config:
    path = ctx.obj["config_path"]
    return load(path)


def desk_of(ctx: click.Context, *, migrate: bool = True) -> Any:
    """The desk of the command's config. Commands that only read pass migrate=False: they
    never change the schema, and say to run `mailbot db upgrade` when it is behind."""
    from mailbot.app import Desk

    desk = Desk(config_of(ctx), migrate=migrate)
    ctx.call_on_close(desk.close)  # its extraction worker and its connections end with the command
    return desk


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", envvar="MAILBOT_CONFIG", default="mailbot.toml",
              show_default=True, help="The TOML configuration file (or set MAILBOT_CONFIG).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.version_option(__version__)
@click.pass_context
def main(ctx: click.Context, config_path: str, verbose: bool) -> None:
    """mailbot: the daemon behind a delist@ address.

    \b
    Example:
      mailbot -c /etc/mailbot.toml check
      mailbot -c /etc/mailbot.toml run
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "imapclient", "mailparser"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # a command prints an outgoing outage as its own one line; the log's longer account is the daemon's
        logging.getLogger("mailbot.outgoing.sendhealth").setLevel(logging.CRITICAL)




def actor() -> str:
    import getpass

    try:
        return f"{getpass.getuser()} (command line)"
    except Exception:
        return "command line"



def progress(label: str, total: int) -> Callable[[Any], Any]:
    """A progress bar on a terminal; nothing in a pipe."""
    if not sys.stderr.isatty():
        return lambda it: it
    from rich.progress import track

    return lambda it: track(it, description=label, total=total, console=None, transient=True)


