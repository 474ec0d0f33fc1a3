"""Config: every key, every rule, and the precedence flag > env > file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from surge.config import (
    DEFAULT_REST_URL,
    DEFAULT_WS_URL,
    SECTIONS,
    Settings,
    TradeSettings,
    load_settings,
)
from surge.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "surge.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_contracts(tmp_path: Path) -> None:
    s = load_settings(env={"SURGE_HOME": str(tmp_path)})
    assert (s.filter_4h.workers, s.filter_4h.batch_size, s.filter_4h.lookback) == (3, 100, 6)
    assert (s.filter_4h.min_change_pct, s.filter_4h.max_change_pct) == (-5.0, 10.0)
    assert s.filter_4h.min_quote_volume == 5_000_000 and s.filter_4h.refresh_s == 900
    assert (s.surge.min_change_pct, s.surge.volume_multiple, s.surge.volume_lookback) == (3.0, 3.0, 20)
    assert s.surge.min_quote_volume == 50_000 and s.surge.cooldown_s == 900
    t = s.trade
    assert (t.mode, t.position_usdt, t.take_profit_pct, t.stop_loss_pct) == ("paper", 100, 2.0, 1.0)
    assert (t.max_hold_s, t.max_open_positions) == (3600, 5)
    assert s.stream.streams_per_connection == 200
    assert (s.rest_url, s.ws_url) == (DEFAULT_REST_URL, DEFAULT_WS_URL)
    assert s.home == tmp_path and s.config_path is None and s.db_path == tmp_path / "surge.db"


def test_full_contract_file_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[filter_4h]
workers = 2
batch_size = 50
lookback = 4
min_change_pct = -2.5
max_change_pct = 8
min_quote_volume = 1000000
refresh_s = 600
[surge]
min_change_pct = 2.0
volume_multiple = 4
volume_lookback = 30
min_quote_volume = 10000
cooldown_s = 60
[trade]
mode = "paper"
position_usdt = 50
take_profit_pct = 1.5
stop_loss_pct = 0.5
max_hold_s = 600
max_open_positions = 2
leverage = 3
[stream]
streams_per_connection = 1024
""",
    )
    s = load_settings(config_path=path, env={})
    assert s.filter_4h.workers == 2 and s.filter_4h.max_change_pct == 8.0
    assert isinstance(s.filter_4h.max_change_pct, float)  # ints accepted where numbers are expected
    assert s.surge.volume_lookback == 30 and s.trade.max_open_positions == 2
    assert s.trade.leverage == 3 and TradeSettings().leverage == 1
    assert s.stream.streams_per_connection == 1024 and s.config_path == path


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[filter_4h]\nworkers = 4", "filter_4h.workers"),
        ("[filter_4h]\nworkers = 0", "filter_4h.workers"),
        ("[filter_4h]\nworkers = 2.5", "filter_4h.workers"),
        ("[filter_4h]\nworkers = true", "filter_4h.workers"),
        ("[filter_4h]\nbatch_size = 0", "filter_4h.batch_size"),
        ("[filter_4h]\nlookback = 100", "filter_4h.lookback"),
        ("[filter_4h]\nlookback = 1", "filter_4h.lookback"),
        ('[filter_4h]\nmin_change_pct = "x"', "filter_4h.min_change_pct"),
        ("[filter_4h]\nmax_change_pct = nan", "filter_4h.max_change_pct"),
        ("[filter_4h]\nmin_quote_volume = -1", "filter_4h.min_quote_volume"),
        ("[filter_4h]\nrefresh_s = 1", "filter_4h.refresh_s"),
        ("[filter_4h]\nmin_change_pct = 5\nmax_change_pct = 1", "filter_4h.min_change_pct"),
        ("[surge]\nmin_change_pct = 0", "surge.min_change_pct"),
        ("[surge]\nvolume_multiple = -3", "surge.volume_multiple"),
        ("[surge]\nvolume_lookback = 0", "surge.volume_lookback"),
        ("[surge]\nmin_quote_volume = -5", "surge.min_quote_volume"),
        ("[surge]\ncooldown_s = -1", "surge.cooldown_s"),
        ('[trade]\nmode = "yolo"', "trade.mode"),
        ("[trade]\nmode = 1", "trade.mode"),
        ("[trade]\nposition_usdt = 0", "trade.position_usdt"),
        ("[trade]\nposition_usdt = inf", "trade.position_usdt"),
        ("[trade]\ntake_profit_pct = 0", "trade.take_profit_pct"),
        ("[trade]\nstop_loss_pct = 100", "trade.stop_loss_pct"),
        ("[trade]\nmax_hold_s = 0", "trade.max_hold_s"),
        ("[trade]\nmax_open_positions = 0", "trade.max_open_positions"),
        ("[trade]\nleverage = 0", "trade.leverage"),
        ("[trade]\nleverage = 126", "trade.leverage"),
        ("[trade]\nleverage = 2.5", "trade.leverage"),
        ("[stream]\nstreams_per_connection = 2000", "stream.streams_per_connection"),
        ("[stream]\nstreams_per_connection = 0", "stream.streams_per_connection"),
        ("[stream]\nstreams_per_conection = 100", "stream.streams_per_conection"),
        ("[filter_4h]\nworker = 2", "filter_4h.worker"),
        ("[filters]\nworkers = 2", "[filters]"),
        ("filter_4h = 3", "filter_4h"),
        ("[filter_4h\nworkers = 2", "invalid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=path, env={})
    assert key in str(info.value)
    assert info.value.exit_code == 2


def test_every_section_key_is_checked() -> None:
    """No key escapes validation: each field declares its rule."""
    for cls in SECTIONS.values():
        for f in cls.__dataclass_fields__.values():
            assert callable(f.metadata["check"]) and f.metadata["rule"], f.name


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "surge.toml").write_text("[filter_4h]\nworkers = 2\nbatch_size = 7\n")
    env = {"SURGE_HOME": str(home), "SURGE_REST_URL": "http://127.0.0.1:9/"}
    s = load_settings(env=env)
    assert s.filter_4h.workers == 2 and s.filter_4h.batch_size == 7  # file over default
    assert s.config_path == home / "surge.toml"
    assert s.rest_url == "http://127.0.0.1:9"  # env over default, trailing slash dropped
    s = load_settings(
        env=env, overrides={"filter_4h.workers": 1, "rest_url": "http://127.0.0.1:8", "ws_url": None}
    )
    assert s.filter_4h.workers == 1 and s.filter_4h.batch_size == 7  # flag over file
    assert s.rest_url == "http://127.0.0.1:8"  # flag over env
    assert s.ws_url == DEFAULT_WS_URL  # None means the flag was not given


def test_surge_config_env_and_explicit_path(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[trade]\nmax_open_positions = 9\n")
    s = load_settings(env={"SURGE_HOME": str(tmp_path), "SURGE_CONFIG": str(other)})
    assert s.trade.max_open_positions == 9
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(env={"SURGE_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_path=tmp_path / "missing.toml", env={})


def test_flag_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match="filter_4h.workers"):
        load_settings(env={}, overrides={"filter_4h.workers": 4})


@pytest.mark.parametrize(
    ("var", "value"),
    [("SURGE_REST_URL", "ftp://x"), ("SURGE_REST_URL", "fapi.binance.com"), ("SURGE_WS_URL", "http://x")],
)
def test_bad_urls(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings(env={var: value})


def test_secrets_never_in_repr() -> None:
    s = load_settings(env={"SURGE_API_KEY": "key-abc123", "SURGE_API_SECRET": "sec-xyz789"})
    assert s.api_key == "key-abc123" and s.api_secret == "sec-xyz789"
    assert "key-abc123" not in repr(s) and "sec-xyz789" not in repr(s) and "sec-xyz789" not in str(s)


def test_settings_default_construction_is_valid() -> None:
    assert Settings().filter_4h.workers == 3
