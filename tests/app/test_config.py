"""Configuration: defaults, TOML file, command-line overrides, one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import Config, ConfigError, load_config, save_config


def test_defaults_are_safe(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml")
    assert (config.ae_title, config.port, config.bind) == ("FIRSTLOOK", 11112, "127.0.0.1")
    assert config.allow_ae == [] and config.quiet_period_s == 5.0 and config.max_associations >= 8


def test_file_then_command_line(tmp_path: Path) -> None:
    path = tmp_path / "firstlook.toml"
    path.write_text('ae_title = "NODE1"\nport = 104\nallow_ae = ["CT01"]\ndata_dir = "~/fl-data"\n')
    config = load_config(path, {"port": 11113, "allow_ae": ["CR01", "CT02"], "bind": None})
    assert config.ae_title == "NODE1" and config.port == 11113
    assert config.allow_ae == ["CR01", "CT02"]  # the command line replaces the file's list
    assert config.data_dir == Path("~/fl-data").expanduser()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c" / "firstlook.toml"
    original = Config(ae_title="ROUND", port=2000, allow_ae=["A1"], allow_ip=["10.0.0.0/8"],
                      data_dir=tmp_path / "d", quiet_period_s=2.5)
    save_config(original, path)
    loaded = load_config(path)
    assert (loaded.ae_title, loaded.port, loaded.allow_ae, loaded.allow_ip, loaded.data_dir, loaded.quiet_period_s) \
        == ("ROUND", 2000, ["A1"], ["10.0.0.0/8"], tmp_path / "d", 2.5)


def test_a_saved_config_only_its_user_can_read(tmp_path: Path) -> None:
    """A reading desktop's file holds the user's API token; an existing file's looser mode goes."""
    path = tmp_path / "firstlook.toml"
    path.write_text('ae_title = "OLD"\n')
    path.chmod(0o644)
    save_config(Config(api_token="secret-token", cache_max_gb=2.5), path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_config(path)
    assert (loaded.api_token, loaded.cache_max_gb) == ("secret-token", 2.5)


@pytest.mark.parametrize("values, needle", [
    ({"port": 0}, "port must be a whole number from 1 to 65535"),
    ({"port": 65536}, "port must be"),
    ({"port": True}, "port must be"),
    ({"ae_title": ""}, "non-empty AE title"),
    ({"ae_title": "X" * 17}, "longer than 16 characters"),
    ({"ae_title": "A\\B"}, "no backslash"),
    ({"ae_title": "Ä"}, "printable ASCII"),
    ({"allow_ae": ["OK", "B\\AD"]}, "allow_ae"),
    ({"allow_ip": ["10.0.0.300"]}, "allow_ip entry"),
    ({"bind": "localhost:80"}, "bind must be an IP address"),
    ({"quiet_period_s": 0}, "quiet_period_s"),
    ({"max_associations": 0}, "max_associations"),
    ({"min_free_mb": -1}, "min_free_mb"),
    ({"log_level": "LOUD"}, "log_level"),
    ({"cache_max_gb": 0}, "cache_max_gb must be a number of gigabytes"),
    ({"cache_max_gb": "lots"}, "cache_max_gb"),
    ({"colour": "blue"}, "unknown key(s) colour"),
])
def test_invalid_values_raise_one_sentence(tmp_path: Path, values: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml", values)
    message = str(info.value)
    assert needle in message
    assert message.endswith(".") and "\n" not in message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "firstlook.toml"
    path.write_text("port = = 3\n")
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(path)
