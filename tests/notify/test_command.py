"""``surge notify --test``: one message to every configured URL (real receivers on loopback); exit 0
only when all took it, 1 when one answered 500, 2 when no URL is configured. Each URL's outcome is
printed in its private form; the token never appears."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from surge.cli import main
from tests.notify.receiver import TOKEN, Receiver


def notify_test(home: Path, urls: str | None, *args: str) -> Result:
    env = {"SURGE_HOME": str(home), "SURGE_CONFIG": None, "SURGE_NOTIFY_URLS": urls}
    return CliRunner().invoke(main, ["notify", *args], env=env)


def test_every_url_delivered_exits_0(tmp_path: Path, receiver_factory: Callable[[str], Receiver]) -> None:
    a, b = receiver_factory("ok"), receiver_factory("ok")
    result = notify_test(tmp_path, f"{a.url('/a')},{b.url('/b')}", "--test")
    assert result.exit_code == 0, result.output
    assert a.requests == 1 and b.requests == 1
    assert "Test notification from surge" in a.bodies[0]["message"] and a.bodies[0]["title"] == "surge: test"
    lines = result.stdout.splitlines()
    assert lines == [
        f"delivered  json://surge:****@127.0.0.1:{a.port}/a",
        f"delivered  json://surge:****@127.0.0.1:{b.port}/b",
    ]
    assert TOKEN not in result.output


def test_one_failing_url_exits_1(tmp_path: Path, receiver_factory: Callable[[str], Receiver]) -> None:
    good, bad = receiver_factory("ok"), receiver_factory("fail")
    result = notify_test(tmp_path, f"{good.url()} {bad.url()}", "--test")
    assert result.exit_code == 1, result.output
    assert good.requests == 1 and bad.requests == 1
    assert f"FAILED     json://surge:****@127.0.0.1:{bad.port}/hook: " in result.stdout
    assert "error=500" in result.stdout
    assert "1 of 2 URL(s) did not take the message" in result.stderr
    assert TOKEN not in result.output


def test_no_url_configured_exits_2_with_one_line(tmp_path: Path) -> None:
    result = notify_test(tmp_path, None, "--test")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "surge: error: no notification URL configured: set [notify] urls in the config or SURGE_NOTIFY_URLS"
    ]


def test_without_test_it_is_a_usage_error(tmp_path: Path) -> None:
    result = notify_test(tmp_path, None)
    assert result.exit_code == 2 and "surge notify --test" in result.stderr
