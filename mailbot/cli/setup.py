"""Commands for setting up: a starter config (init) and the demo."""

from __future__ import annotations

from pathlib import Path

import click

from mailbot.cli.base import (
    SECURITY,
    fail,
    main,
)
from mailbot.config import Security
from mailbot.errors import EXIT_CONFIG, EXIT_FAILED


@main.command()
@click.option("--path", "path", type=click.Path(dir_okay=False),
              help="Where to write the config (default: the -c/--config file, mailbot.toml).")
@click.option("--example", is_flag=True, help="Print config.example.toml (every key, its default, what it does).")
@click.option("--imap-host", help="IMAP server of the delist@ mailbox.")
@click.option("--imap-port", type=click.IntRange(1, 65535), help="IMAP port (default: 993 for tls, 143 otherwise).")
@click.option("--imap-security", type=click.Choice(SECURITY),
              help="tls (implicit, the default), starttls, or none (test servers only).")
@click.option("--imap-user", help="Login name of that mailbox.")
@click.option("--sent-folder", "sent_folders", multiple=True,
              help="The shared mailbox's sent folder, where staff answers stop the clock (repeat for several).")
@click.option("--smtp-host", help="SMTP submission server for replies (default: the IMAP host).")
@click.option("--smtp-port", type=click.IntRange(1, 65535),
              help="SMTP port (default: 587 for starttls, 465 for tls, 25 for none).")
@click.option("--smtp-security", type=click.Choice(SECURITY),
              help="starttls (the default), tls (implicit), or none (test servers only).")
@click.option("--smtp-user", help="SMTP login (default: the IMAP user; \"\" for none).")
@click.option("--from-address", help="From of every reply (default: the IMAP user).")
@click.option("--staff", multiple=True, help="A staff address for escalations and digests (repeat, or comma-separate).")
@click.option("--database-url", help="sqlite:///mailbot.db (default) or postgresql+psycopg://user@host/db.")
@click.option("--desk-name", help="The name senders and staff see.")
@click.option("--timezone", help="IANA time zone times are shown in, e.g. Europe/Berlin (default UTC).")
@click.option("--maildir", help="A local setup like the demo: read DIR/inbox, write replies to DIR/outbox.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.pass_context
def init(ctx: click.Context, path: str | None, example: bool, imap_host: str | None, imap_port: int | None,
         imap_security: Security | None, imap_user: str | None, sent_folders: tuple[str, ...],
         smtp_host: str | None, smtp_port: int | None, smtp_security: Security | None, smtp_user: str | None,
         from_address: str | None, staff: tuple[str, ...], database_url: str | None, desk_name: str | None,
         timezone: str | None, maildir: str | None, force: bool) -> None:
    """Write a starter config: asks on a terminal, or takes flags. Never writes a password.

    With no flags it asks for every value; with flags it asks only for what
    is missing and required. The file is checked before it is written.
    --example prints the documented example of every key instead.

    \b
    Example:
      mailbot init
      mailbot init --imap-host imap.example.org --imap-user delist@example.org \\
        --smtp-host smtp.example.org --smtp-port 465 --staff support@example.org \\
        --sent-folder Sent --path /etc/mailbot.toml
      mailbot init --maildir ./mail --from-address delist@example.org
      mailbot init --example > mailbot.example.toml
    """
    from mailbot.cli import init as init_mod

    if example:
        try:
            click.echo(init_mod.example_text(), nl=False)
        except init_mod.InitError as e:
            fail(str(e), EXIT_FAILED)
        return
    target = Path(path or ctx.find_root().obj["config_path"])
    interview = not any((imap_host, imap_port, imap_security, imap_user, sent_folders, smtp_host, smtp_port,
                         smtp_security, smtp_user, from_address, staff, database_url, desk_name, timezone,
                         maildir))
    if target.exists() and not force:
        fail(f"{target} exists; add --force to overwrite it", EXIT_FAILED)

    def ask(text: str, value: str | None, default: str | None = None, required: bool = False,
            flag: str = "") -> str:
        if value is not None:
            return value
        if not interview and (default is not None or not required):
            return default or ""
        try:
            return str(click.prompt(text, default=default, show_default=bool(default)))
        except click.Abort:
            fail(f"give {flag} (or run mailbot init on a terminal to be asked)", EXIT_CONFIG)
            raise

    def connection(name: str, service: str, port: int | None, security: Security | None) -> tuple[int, Security]:
        if not interview:
            return init_mod.port_and_security(service, port, security)
        chosen: Security = click.prompt(f"{name} security", type=click.Choice(SECURITY),
                                        default=init_mod.DEFAULT_SECURITY[service])
        return int(click.prompt(f"{name} port", type=click.IntRange(1, 65535),
                                default=init_mod.DEFAULT_PORTS[service][chosen])), chosen

    if interview and not maildir:
        kind = click.prompt("Read mail from an IMAP server or a local Maildir",
                            type=click.Choice(["imap", "maildir"]), default="imap")
        if kind == "maildir":
            maildir = ask("Maildir folder (inbox/ and outbox/ go inside)", None, "mail")
    if maildir:
        a = init_mod.Answers(maildir=maildir,
                             from_address=ask("From address of replies", from_address, "delist@example.org"))
    else:
        host = ask("IMAP server", imap_host, required=True, flag="--imap-host")
        imap = connection("IMAP", "imap", imap_port, imap_security)
        user = ask("IMAP user (the delist@ mailbox)", imap_user, required=True, flag="--imap-user")
        folders = list(sent_folders) or [ask("Sent folder(s) of the mailbox, comma-separated (staff answers)",
                                             None, "")]
        smtp_server = ask("SMTP server", smtp_host, host)
        smtp = connection("SMTP", "smtp", smtp_port, smtp_security)
        a = init_mod.Answers(
            imap_host=host, imap_port=imap[0], imap_security=imap[1], imap_user=user,
            sent_folders=[f.strip() for item in folders for f in item.split(",") if f.strip()],
            smtp_host=smtp_server, smtp_port=smtp[0], smtp_security=smtp[1],
            smtp_user=ask("SMTP user", smtp_user, user),
            from_address=ask("From address of replies", from_address, user if "@" in user else None,
                             required=True, flag="--from-address"))
    a.desk_name = ask("Desk name", desk_name, "Delist desk")
    a.timezone = ask("Time zone", timezone, "UTC")
    staff_list = list(staff) or [ask("Staff addresses (comma-separated)", None, "")]
    a.staff = [s.strip() for item in staff_list for s in item.split(",") if s.strip()]
    a.database_url = ask("Database URL", database_url, "sqlite:///mailbot.db")
    try:
        init_mod.write_config(target, init_mod.starter_toml(a), force=force)
    except init_mod.InitError as e:
        fail(f"config not written: {e}", EXIT_CONFIG)
    made = init_mod.make_maildirs(target) if maildir else []
    for line in init_mod.next_steps(target, a, made):
        click.echo(line)


@main.command()
@click.option("--dir", "directory", default="mailbot-demo", show_default=True,
              help="Where to put the demo's config, Maildirs and database.")
def demo(directory: str) -> None:
    """Run the desk on shipped sample forwards, with no mail server.

    Samples go into a local Maildir inbox; mailbot processes them into
    SQLite and writes its replies into a local Maildir outbox. Then, in
    simulated time on a copy of the database, it shows the escalation mail
    and digest staff get near the 48-hour mark.

    \b
    Example:
      mailbot demo --dir /tmp/mailbot-demo
    """
    from mailbot.cli.demo import run_demo

    run_demo(Path(directory), click.echo)
