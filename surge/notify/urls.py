"""apprise, loaded only when a URL is configured, and the URLs it is given: checked, shown privately.

Why a module of its own: importing apprise costs about 175 ms and loads every plugin, so neither
``surge --help`` nor a ``surge run`` without notifications pays for it. apprise URLs hold tokens
(a Telegram bot token, a webhook's password): they are only ever shown in apprise's privacy form
or by their position, and apprise's own logger is kept away from stderr and the log file.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from surge.errors import ConfigError

_setup_lock = threading.Lock()
_apprise: Any = None


class _LastWarning(logging.Handler):
    """What apprise last warned about on this thread ("Internal Server Error error=500."): the
    reason a send failed, since apprise's notify() only answers True or False."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.local.text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record of a plugin says nothing useful
            self.local.text = None

    def take(self) -> str | None:
        """This thread's last warning, forgotten once taken."""
        text = getattr(self.local, "text", None)
        self.local.text = None
        return text


LAST_WARNING = _LastWarning()


def load_apprise() -> Any:
    """The apprise module, imported once; its logger no longer reaches the root logger (whose
    last-resort handler would print its warnings, some with hosts and ids, on stderr)."""
    global _apprise
    with _setup_lock:
        if _apprise is None:
            import apprise

            logger = logging.getLogger("apprise")
            logger.propagate = False
            if LAST_WARNING not in logger.handlers:
                logger.addHandler(LAST_WARNING)
            _apprise = apprise
        return _apprise


def instantiate(url: str) -> Any:
    """apprise's service object for ``url``, or None when apprise cannot use it."""
    apprise = load_apprise()
    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:  # noqa: BLE001 - any parse failure is "not a usable URL"
        return None


def check_urls(urls: Sequence[str], where: str) -> None:
    """Every URL one apprise can use, or a ConfigError naming the bad one by position and scheme
    (never the URL: the part after the scheme may be a token)."""
    for i, url in enumerate(urls, start=1):
        if instantiate(url) is None:
            scheme = url.partition("://")[0] if "://" in url else ""
            shown = f"{scheme}://..." if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,20}", scheme) else "?"
            raise ConfigError(
                f"{where}: URL #{i} of {len(urls)} ({shown}) is not one apprise can use "
                "(see https://github.com/caronc/apprise/wiki for the URL of each service)"
            )


def private(service: Any) -> str:
    """A service's URL in apprise's privacy form (tokens and passwords masked), without the query
    of default options apprise appends, which only makes a line long."""
    return str(service.url(privacy=True)).split("?", 1)[0]


def secrets_of(url: str) -> list[str]:
    """The parts of ``url`` its privacy form hides (tokens, passwords): what must be redacted from
    any text that might quote them. Parts shorter than 4 characters are not worth a redaction."""
    service = instantiate(url)
    if service is None:
        return []
    shown = str(service.url(privacy=True))
    parts = re.split(r"[:/@?&=#,]+", url.partition("://")[2])
    return sorted({p for p in parts if len(p) >= 4 and p not in shown}, key=len, reverse=True)


__all__ = ["LAST_WARNING", "check_urls", "instantiate", "load_apprise", "private", "secrets_of"]
