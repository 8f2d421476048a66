"""The one grammar for durations, the ISO 8601 forms, and where carbonrun keeps its files."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonrun import paths
from carbonrun.intensity import providers
from carbonrun.timefmt import format_duration, iso, parse_duration, parse_since

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(st.lists(st.tuples(st.integers(1, 999), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4))
def test_any_sum_of_units_is_a_duration(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == sum(n * UNITS[u] for n, u in parts)
    assert parse_duration(text.upper()) == parse_duration(text)


@given(st.integers(1, 10**7))
def test_format_and_parse_agree_to_the_shown_precision(seconds):
    shown = format_duration(seconds)
    back = parse_duration(shown)
    assert abs(back - seconds) < (3600 if "d" in shown else 60 if "h" in shown else 1)


@pytest.mark.parametrize("bad", ["", "0", "-5m", "1x", "h", "1h30", "nan", "inf", "1.5.2s", "30 minutes"])
def test_what_is_not_a_duration(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_since_takes_the_same_durations_as_everything_else():
    now = 1_700_000_000.0
    assert parse_since("1h30m", now) == now - 5400  # history --since used to refuse this
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2024-05-01", now) == dt.datetime(2024, 5, 1).timestamp()  # local time
    with pytest.raises(ValueError, match="ISO date"):
        parse_since("last tuesday", now)


@given(st.floats(0, 4_000_000_000, allow_nan=False))
def test_iso_forms(t):
    utc = iso(t, utc=True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", iso(t, utc=True, timespec="minutes"))
    local = dt.datetime.fromisoformat(iso(t, timespec="milliseconds"))
    assert local.utcoffset() is not None and abs(local.timestamp() - t) < 0.001


def test_xdg_paths_follow_the_spec(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert paths.config_dir(env) == tmp_path / ".config" / "carbonrun"
    assert paths.data_dir(env) == tmp_path / ".local" / "share" / "carbonrun"
    assert paths.state_dir(env) == tmp_path / ".local" / "state" / "carbonrun"
    assert paths.cache_dir(env) == tmp_path / ".cache" / "carbonrun"
    env.update(XDG_DATA_HOME="/x/data", XDG_CACHE_HOME="relative/cache")  # the spec: ignore a relative one
    assert paths.data_dir(env) == Path("/x/data/carbonrun")
    assert paths.cache_dir(env) == tmp_path / ".cache" / "carbonrun"
    env["CARBONRUN_HOME"] = "/srv/cr"  # one place for the store and the state
    assert paths.data_dir(env) == paths.state_dir(env) == Path("/srv/cr")
    assert paths.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "carbonrun"
    assert paths.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "gone")}).name.startswith("carbonrun-")


def test_provider_names_are_defined_once():
    from carbonrun.settings import SPECS

    assert providers.NAMES == ("uk", "electricitymaps", "watttime")
    for name in providers.NAMES:
        assert SPECS["provider"].convert(name) == name
        assert providers.get_provider(name).name == name
    assert SPECS["provider"].convert("none") == "none" and providers.configured("none") is None
    with pytest.raises(ValueError):
        SPECS["provider"].convert("carbonintensity")
