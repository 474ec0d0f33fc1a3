"""Notifications of ``surge run`` through apprise (Telegram, Discord, e-mail, a JSON webhook, ...).

``messages`` (the words), ``urls`` (apprise, loaded lazily; URLs checked and shown privately),
``service`` (one URL, its failures), ``notifier`` (the one sending thread and its bounded queue),
``sources`` (log records and the loop's periodic checks as events), ``wiring`` (one bot's
notifications, started and stopped with it) and ``command`` (``surge notify --test``). Importing
this package imports neither apprise nor any of them.
"""
