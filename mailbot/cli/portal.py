"""`mailbot portal`: serve the self-service delist portal (issue #19), beside the daemon.

Runs the Starlette application of `mailbot.portal.web` on uvicorn, on loopback by default:
in production a reverse proxy in front terminates TLS and passes X-Forwarded-For
(docs/operators.md, "The self-service portal"). The signing key comes from `[portal]
secret_file` or MAILBOT_PORTAL_SECRET; a missing key or listing source is a configuration
error (exit 2) before the port is opened.
"""

from __future__ import annotations

import logging

import click

from mailbot.cli.base import config_of, main, operator_errors


@main.command()
@click.option("--host", help="Address to listen on (default [portal] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default [portal] port, 8025).")
@click.pass_context
@operator_errors
def portal(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the self-service delist portal (the form, the confirmation link, Delist IP).

    \b
    Example:
      MAILBOT_PORTAL_SECRET_FILE=/etc/mailbot/portal-key mailbot portal --host 127.0.0.1 --port 8025
    """
    import uvicorn

    from mailbot.logs import setup
    from mailbot.portal import metrics, open_portal
    from mailbot.portal.web import make_app

    config = config_of(ctx)
    setup(config.log.format, "DEBUG" if ctx.find_root().obj.get("verbose") else config.log.level)
    host = host or config.portal.host
    port = port or config.portal.port
    service, pages, sender = open_portal(config, host, port)
    if config.portal.metrics_port:
        metrics.serve(config.metrics.address, config.portal.metrics_port)
    sender.start()
    logging.getLogger(__name__).info("portal on %s:%s, links to %s", host, port, service.base_url)
    try:
        # proxy headers are the application's to read (only from [portal] trusted_proxies);
        # uvicorn's own logging would print the confirmation tokens in its access lines
        uvicorn.run(make_app(service, pages), host=host, port=port, proxy_headers=False, server_header=False,
                    date_header=True, log_config=None, access_log=False, timeout_graceful_shutdown=10)
    finally:
        sender.stop()
        service.lister.close()
        service.engine.dispose()
