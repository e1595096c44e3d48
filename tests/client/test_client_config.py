"""The desktop's keys for attaching: server_url (https beyond this machine), api_token,
server_ca; each bad value stops start-up with one sentence naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import CONFIG_KEYS, build_parser
from app.core.config import ConfigError, load_config
from app.core.models import default_specs


@pytest.mark.parametrize("values, message", [
    ({"server_url": "http://reading-server:11113"}, "must start with https://"),
    ({"server_url": "firstlook:11113"}, "is not a URL"),
    ({"server_url": "https://server:99999"}, "is not a URL"),
    ({"server_url": "https://server:11113", "api_token": "two words"}, "without spaces"),
    ({"server_url": "http://127.0.0.1:11113", "server_ca": "/etc/ssl/ca.pem"}, "only used with an https://"),
])
def test_bad_client_values_are_one_sentence(tmp_path: Path, values: dict, message: str):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(tmp_path / "absent.toml", values)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")


def test_server_url_comes_from_the_command_line_or_the_file(tmp_path: Path):
    for url in ("http://127.0.0.1:11113", "http://localhost:8080", "https://firstlook.hospital:11113/"):
        assert load_config(tmp_path / "absent.toml", {"server_url": url}).server_url == url
    args = build_parser(default_specs()).parse_args(["--server-url", "https://firstlook.hospital:11113"])
    assert "server_url" in CONFIG_KEYS
    config = load_config(tmp_path / "absent.toml", {k: getattr(args, k) for k in CONFIG_KEYS})
    assert config.server_url == "https://firstlook.hospital:11113" and config.api_token == ""
    toml = tmp_path / "desk.toml"
    toml.write_text('server_url = "https://firstlook.hospital:11113"\napi_token = "abc"\n'
                    'server_ca = "~/hospital-ca.pem"\n')
    config = load_config(toml)
    assert config.api_token == "abc" and config.server_ca == Path.home() / "hospital-ca.pem"
