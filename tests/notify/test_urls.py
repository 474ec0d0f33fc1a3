"""``[notify]`` in the config and the URLs it names: checked up front (exit 2, the key or the URL's
position named), SURGE_NOTIFY_URLS winning over the file, and no token in any message or repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from surge.config import DEFAULT_NOTIFY_EVENTS, load_settings
from surge.errors import ConfigError
from surge.notify.urls import instantiate, private, secrets_of
from tests.notify.receiver import TOKEN

GOOD = f"json://surge:{TOKEN}@127.0.0.1:8123/hook"
TELEGRAM = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123"


def settings_of(tmp_path: Path, toml: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "surge.toml"
    path.write_text(toml)
    return load_settings(config_path=path, env={"SURGE_HOME": str(tmp_path), **(env or {})})


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(env={"SURGE_HOME": str(tmp_path)}).notify
    assert s.urls == () and s.events == DEFAULT_NOTIFY_EVENTS and s.outage_s == 60.0
    assert DEFAULT_NOTIFY_EVENTS == ("entry", "exit", "error", "outage", "ban")


def test_the_section_is_read_and_repr_hides_the_urls(tmp_path: Path) -> None:
    s = settings_of(
        tmp_path, f'[notify]\nurls = ["{GOOD}", "{TELEGRAM}"]\nevents = ["signal", "daily"]\noutage_s = 30\n'
    )
    assert s.notify.urls == (GOOD, TELEGRAM)
    assert s.notify.events == ("signal", "daily") and s.notify.outage_s == 30.0
    assert TOKEN not in repr(s) and "AAHdqTcv" not in repr(s) and "outage_s=30.0" in repr(s)


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    other = "json://127.0.0.1:9/other"
    s = settings_of(
        tmp_path, f'[notify]\nurls = ["{GOOD}"]\n', {"SURGE_NOTIFY_URLS": f" {other},\n {TELEGRAM} "}
    )
    assert s.notify.urls == (other, TELEGRAM)
    assert settings_of(
        tmp_path, f'[notify]\nurls = ["{GOOD}"]\n', {"SURGE_NOTIFY_URLS": " "}
    ).notify.urls == (GOOD,)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[notify]\nevents = ["entry", "bogus"]\n', "notify.events must be names among"),
        ('[notify]\nevents = "entry"\n', "notify.events must be a list of strings"),
        ("[notify]\noutage_s = 0\n", "notify.outage_s must be > 0"),
        ("[notify]\noutage_s = true\n", "notify.outage_s must be a finite number"),
        ("[notify]\nwhen = 1\n", "unknown config key notify.when"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_of(tmp_path, toml)
    assert needle in str(info.value) and info.value.exit_code == 2
    if "bogus" in toml:
        assert str(info.value).endswith("got 'bogus'")


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        (f'[notify]\nurls = ["{GOOD}", "nosuchservice://{TOKEN}@host"]\n', {}, "notify.urls: URL #2 of 2"),
        (
            "",
            {"SURGE_NOTIFY_URLS": f"{GOOD} tgram://{TOKEN}"},
            "SURGE_NOTIFY_URLS: URL #2 of 2 (tgram://...)",
        ),
        (f'[notify]\nurls = "{GOOD}"\n', {}, "notify.urls must be a list of strings, got str"),
        ('[notify]\nurls = [""]\n', {}, "notify.urls must be non-empty URLs (the value is not shown"),
    ],
)
def test_a_bad_url_is_named_by_position_never_shown(
    tmp_path: Path, toml: str, env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings_of(tmp_path, toml, env)
    assert needle in str(info.value) and info.value.exit_code == 2
    assert TOKEN not in str(info.value)


def test_private_form_and_secrets() -> None:
    service = instantiate(TELEGRAM)
    assert private(service) == "tgram://1...w/-100123/"
    assert secrets_of(TELEGRAM) == ["AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "123456789"]
    assert secrets_of(GOOD) == [TOKEN]
    assert instantiate("nosuchservice://x") is None
