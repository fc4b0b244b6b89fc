"""Commands for whoever writes the templates: list them and preview one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailbot.cli.base import (
    fail,
    main,
    operator_errors,
)
from mailbot.config import load
from mailbot.errors import EXIT_FAILED


@main.group()
def templates() -> None:
    """The templates of outgoing mail: which exist, and what they look like.

    \b
    Example:
      mailbot templates list
      mailbot templates preview ack --language de --html ack.html
    """


def template_renderer(ctx: click.Context, language: str | None) -> Any:
    """A renderer as the desk would build it; shipped templates only when there is no config file."""
    from pydantic import ValidationError

    from mailbot.config import TemplatesConfig
    from mailbot.outgoing.render import Renderer

    path = Path(ctx.find_root().obj["config_path"])
    settings = TemplatesConfig()
    override = None
    if path.exists():
        config = load(path)
        settings = config.templates
        override = config.path(settings.dir) if settings.dir else None
    else:
        click.echo(f"mailbot: no config file {path}: showing the shipped templates", err=True)
    if language:
        try:
            settings = TemplatesConfig(language=language)
        except ValidationError:
            raise click.BadParameter(f"{language!r} is not a language tag like en or de",
                                     param_hint="--language") from None
    return Renderer(override, settings.language)


@templates.command("list")
@click.pass_context
@operator_errors
def templates_list(ctx: click.Context) -> None:
    """List the templates: languages they exist in, which one is used, whether overridden.

    \b
    Example:
      mailbot -c mailbot.toml templates list
    """
    r = template_renderer(ctx, None)
    click.echo(f"{'template':<12} {'languages':<12} {'used':<6} {'overridden':<10} file")
    for name in r.names():
        click.echo(f"{name:<12} {', '.join(r.languages(name)):<12} {r.language_used(name):<6} "
                   f"{'yes' if r.overridden(name) else 'no':<10} {r.source(name, 'txt')}")


@templates.command("preview")
@click.argument("name")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), help="Also write the HTML part to this file.")
@click.option("--language", help="Render this language (default: [templates] language).")
@click.pass_context
@operator_errors
def templates_preview(ctx: click.Context, name: str, html_file: str | None, language: str | None) -> None:
    """Render template NAME with sample data: its subject and text, and the HTML to a file.

    \b
    Example:
      mailbot templates preview ack
      mailbot templates preview needs_info --language de --html needs_info.html
    """
    from mailbot.outgoing.render import SAMPLE_CONTEXT, TemplateError

    r = template_renderer(ctx, language)
    if name not in r.names():
        fail(f"no template {name!r}; there are: {', '.join(r.names())}", EXIT_FAILED)
    try:
        subject, text, html = r.render(name, SAMPLE_CONTEXT)
    except TemplateError as e:
        fail(str(e), EXIT_FAILED)
        return
    click.echo(f"Subject: {subject}\n\n{text}", nl=False)
    if html_file:
        Path(html_file).write_text(html, encoding="utf-8")
        click.echo(f"\n(HTML part written to {html_file})")
