"""Config: every key, every rule, and the precedence flag > env > file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from surge import config
from surge.config import (
    DEFAULT_REST_URL,
    DEFAULT_WS_URL,
    SECTIONS,
    Settings,
    TradeSettings,
    load_settings,
)
from surge.errors import ConfigError
from surge.store import open_store


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
    assert s.home == tmp_path and s.config_path is None
    with open_store(s.home) as store:  # the database lives in the home (the store names the file)
        assert store.path == tmp_path / "surge.db"


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


# --------------------------------------------------------------------------- bounds that match the use


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[trade]\nmax_hold_s = 1e17", "trade.max_hold_s"),  # its deadline overflowed an int64 column
        ("[surge]\ncooldown_s = 1e308", "surge.cooldown_s"),  # int(1e308 * 1000): OverflowError
        ("[surge]\nvolume_lookback = 150", "surge.volume_lookback"),  # never filled by the backfill
        ("[surge]\nvolume_lookback = 98", "surge.volume_lookback"),  # + 2 is a weight-2 request
        ("[trade]\nposition_usdt = 1e308", "trade.position_usdt"),  # qty and PnL turn inf / nan
        ("[trade]\nmax_hold_s = 1" + "0" * 400, "trade.max_hold_s"),  # an int beyond a float's range
        ("[filter_4h]\nmin_change_pct = -1" + "0" * 400, "filter_4h.min_change_pct"),
        ('[exchange]\nvenue = "mainnet"', "exchange.venue"),
        ('[exchange]\nvenu = "demo"', "exchange.venu"),
    ],
)
def test_extreme_values_are_refused_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=write(tmp_path, toml), env={})
    message = str(info.value)
    assert key in message and info.value.exit_code == 2
    assert len(message) < 300 and "\n" not in message  # a 400-digit value is not echoed whole


def test_the_largest_accepted_values_are_usable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[surge]\nvolume_lookback = 97\ncooldown_s = 2592000\n"
        "[trade]\nmax_hold_s = 2592000\nposition_usdt = 1e9\n",
    )
    s = load_settings(config_path=path, env={})
    assert s.surge.volume_lookback + 2 <= 99  # the backfill's klines request stays at weight 1
    assert int(s.trade.max_hold_s * 1000) + 2**62 < 2**63  # any deadline fits in an int64 column


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "surge.toml"
    path.write_bytes("[trade]\n# r\u00e9sum\u00e9\nmax_hold_s = 60\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_settings(config_path=path, env={})
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("var", ["SURGE_API_KEY", "SURGE_API_SECRET"])
@pytest.mark.parametrize("bad", ["\r", " ", "\t", "\n", "\x00", "\x1b", "\x7f", "\u00e9", "\u200b"])
def test_keys_with_whitespace_or_control_characters_are_refused_without_showing_them(
    var: str, bad: str
) -> None:
    value = "Zq7Kd93mLpW0xYv" + bad  # e.g. a Windows .env file's trailing carriage return
    env = {"SURGE_API_KEY": "AkEy123", "SURGE_API_SECRET": "sEcReT456", var: value}
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert var in message and info.value.exit_code == 2
    assert "Zq7Kd93mLpW0xYv" not in message and "AkEy123" not in message and "sEcReT456" not in message


def test_plain_keys_are_kept_as_given() -> None:
    key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5Y"
    s = load_settings(env={"SURGE_API_KEY": key, "SURGE_API_SECRET": secret})
    assert (s.api_key, s.api_secret) == (key, secret)
    assert key not in repr(s) and secret not in repr(s)


# --------------------------------------------------------------------------- [exchange] venue


@pytest.mark.parametrize(
    ("venue", "rest", "ws"),
    [
        ("binance", "https://fapi.binance.com", "wss://fstream.binance.com/market"),
        ("testnet", "https://testnet.binancefuture.com", "wss://fstream.binancefuture.com/market"),
        ("demo", "https://demo-fapi.binance.com", "wss://demo-fstream.binance.com/market"),
    ],
)
def test_venue_picks_the_url_pair_and_the_environment_still_wins(
    tmp_path: Path, venue: str, rest: str, ws: str
) -> None:
    path = write(tmp_path, f'[exchange]\nvenue = "{venue}"\n')
    s = load_settings(config_path=path, env={})
    assert (s.exchange.venue, s.rest_url, s.ws_url) == (venue, rest, ws)
    assert config.VENUES[venue] == (rest, ws)
    s = load_settings(config_path=path, env={"SURGE_REST_URL": "http://127.0.0.1:9"})
    assert (s.rest_url, s.ws_url) == ("http://127.0.0.1:9", ws)  # each variable wins on its own
    s = load_settings(config_path=path, env={"SURGE_WS_URL": "ws://127.0.0.1:9"})
    assert (s.rest_url, s.ws_url) == (rest, "ws://127.0.0.1:9")


def test_default_venue_is_binance(tmp_path: Path) -> None:
    s = load_settings(env={"SURGE_HOME": str(tmp_path)})
    assert s.exchange.venue == "binance" and (s.rest_url, s.ws_url) == config.VENUES["binance"]


def test_live_state_of_each_venue_is_kept_apart(tmp_path: Path) -> None:
    """Keys of one venue do not work on another, so neither do its positions: each venue's live trades
    are their own ledger rows (the store's venue label), and paper is apart from all of them."""
    from surge.app import live_venue, venue_of

    labels = set()
    for venue in config.VENUES:
        s = load_settings(config_path=write(tmp_path, f'[exchange]\nvenue = "{venue}"\n'), env={})
        labels |= {venue_of(s.rest_url), live_venue(venue_of(s.rest_url))}
    assert len(labels) == 2 * len(config.VENUES)
    assert "live:testnet.binancefuture.com" in labels and "live:fapi.binance.com" in labels


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SURGE_REST_URL", "http://[::1"),
        ("SURGE_REST_URL", "http://127.0.0.1:99999"),
        ("SURGE_REST_URL", "http://:80"),
        ("SURGE_REST_URL", "http://127.0.0.1:9\x01"),
        ("SURGE_WS_URL", "ws://127.0.0.1:9/x y"),
    ],
)
def test_urls_no_client_would_accept_are_config_errors(var: str, value: str) -> None:
    """Not "exchange unavailable" (exit 1) after four attempts: the URL itself is wrong (exit 2)."""
    with pytest.raises(ConfigError, match=var) as info:
        load_settings(env={var: value})
    assert info.value.exit_code == 2 and "\x01" not in str(info.value)
