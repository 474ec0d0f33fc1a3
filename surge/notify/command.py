"""``surge notify --test`` (registered on the ``surge`` group by cli.py): one message to every
configured URL, so a trader knows the phone will ring before leaving the bot alone for days.

Exit 0 only when every URL took it, 1 when any did not, 2 when no URL is configured. Each URL's
outcome is printed in apprise's privacy form (tokens masked), never the URL as configured.
"""

from __future__ import annotations

import socket
import sys

import click

from surge.cli_shared import CONTEXT, config_option, fail, settings_for
from surge.errors import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE


@click.command("notify", context_settings=CONTEXT)
@click.option("--test", "test", is_flag=True, help="Send one test message to every configured URL.")
@config_option
@click.pass_context
def notify_command(ctx: click.Context, test: bool, config_path: str | None) -> None:
    """Notifications of `surge run` ([notify] in the config, or SURGE_NOTIFY_URLS).

    --test sends one message to every configured URL and prints each one's outcome (tokens masked).
    Exit 0 when every URL took it, 1 when any did not, 2 when no URL is configured.
    """
    if not test:
        raise click.UsageError("say what to do: surge notify --test")
    settings = settings_for(ctx, config_path)
    if not settings.notify.urls:
        fail(
            "no notification URL configured: set [notify] urls in the config or SURGE_NOTIFY_URLS", EXIT_USAGE
        )

    from surge.notify.messages import SUCCESS, Message
    from surge.notify.notifier import SEND_TIMEOUT_S
    from surge.notify.service import Service

    message = Message(
        "surge: test", f"Test notification from surge on {socket.gethostname()}: this URL works.", SUCCESS
    )
    failed = 0
    for url in settings.notify.urls:
        service = Service(url, log_failures=False)
        if service.send(message, SEND_TIMEOUT_S):
            click.echo(f"delivered  {service.shown}")
        else:
            failed += 1
            click.echo(f"FAILED     {service.shown}: {service.last_error}")
    if failed:
        click.echo(f"{failed} of {len(settings.notify.urls)} URL(s) did not take the message", err=True)
    sys.exit(EXIT_RUNTIME if failed else EXIT_OK)


__all__ = ["notify_command"]
