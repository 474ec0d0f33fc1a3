"""One definition of the heartbeat's fields, for the bot that writes it and ``surge status`` that reads it."""

from __future__ import annotations

import typing

from surge.heartbeat import Heartbeat, NumberField


def test_every_field_status_reads_as_a_number_is_a_heartbeat_field_of_a_number_type() -> None:
    hints = typing.get_type_hints(Heartbeat)
    for name in typing.get_args(NumberField):
        assert name in hints, name
        assert set(typing.get_args(hints[name]) or (hints[name],)) <= {int, float, type(None)}, name


def test_the_fields_status_and_tools_rely_on_are_there() -> None:
    keys = set(Heartbeat.__annotations__)
    assert {"pid", "running", "written_at", "venue", "mode", "baseline_ready", "passing"} <= keys
    # what `surge watch` draws: stream health per connection, open positions' last prices, REST weight
    assert {"stream_connections", "last_prices", "rest_weight"} <= keys
    assert len(keys) == 28
