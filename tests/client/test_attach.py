"""Which service a desktop gets: a configured server, the service on this machine (its API
answers with the local token file), else the embedded one, as a single workstation had."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from app.client import RemoteService, choose_service, find_server
from app.client.api_client import TokenRefused
from app.core import config as config_module
from app.core.config import Config, ConfigError
from app.core.events import ServiceConnection
from app.core.service_api import DesktopService, StudyReader, WorklistSource
from tests.support import free_port
from tests.support.api_service import HeadlessService


class Embedded:
    """Stands for ``app.service.Service``: only which factory ran matters here."""

    def __init__(self, config: Config) -> None:
        self.config = config


def desktop_config(tmp_path: Path, **values: object) -> Config:
    return replace(Config(), data_dir=tmp_path / "desk-data", cache_dir=tmp_path / "desk-cache", **values)


def test_without_a_server_or_a_local_service_the_desktop_runs_the_embedded_service(tmp_path: Path):
    config = desktop_config(tmp_path, api_port=free_port())
    assert find_server(config) is None
    assert isinstance(choose_service(config, Embedded), Embedded)
    # A token file left by a service that is not running: nothing answers, still embedded.
    config.token_file.parent.mkdir(parents=True)
    config.token_file.write_text("stale-token\n")
    assert isinstance(choose_service(config, Embedded), Embedded)


def test_a_server_url_without_any_token_is_one_clear_sentence(tmp_path: Path):
    config = desktop_config(tmp_path, server_url="https://firstlook.example:11113")
    with pytest.raises(ConfigError, match="ask IT for a token"):
        choose_service(config, Embedded)


def test_the_desktop_attaches_to_the_local_service_and_a_wrong_token_is_refused(tmp_path: Path):
    service = HeadlessService(tmp_path / "server").start()
    try:
        # Same machine: the service's data dir holds the token file the desktop may read.
        local = replace(desktop_config(tmp_path), data_dir=service.data_dir, api_port=service.api_port)
        attached = choose_service(local, Embedded)
        assert isinstance(attached, RemoteService) and attached.base_url == service.url
        assert isinstance(attached, DesktopService)          # what the desktop's controller checks
        assert isinstance(attached.store, StudyReader) and isinstance(attached.worklist, WorklistSource)
        assert attached.start() and attached.worklist.rows() == []
        assert {m.name for m in attached.models_status()} == {"chexnet", "blast-ct"}
        assert attached.events.alive
        attached.stop()   # wakes the event stream's blocked read (heartbeats are 10 s apart)
        assert not attached.events.alive
        # A server URL with a token that is not one of the service's users: refused at start.
        wrong = choose_service(desktop_config(tmp_path, server_url=service.url, api_token="not-a-user"), Embedded)
        assert isinstance(wrong, RemoteService)
        with pytest.raises(TokenRefused, match="refused the token"):
            wrong.start()
        wrong.stop()
    finally:
        service.stop()


def test_the_installed_services_token_file_attaches_even_while_it_starts(tmp_path: Path, monkeypatch):
    """/run/firstlook/local-token exists only while systemd runs the service: a desktop started
    during the service's start attaches and retries instead of opening a second node."""
    system_file = tmp_path / "run" / "local-token"
    system_file.parent.mkdir()
    system_file.write_text("token\n")
    monkeypatch.setattr(config_module, "SYSTEM_TOKEN_FILE", system_file)
    config = desktop_config(tmp_path, api_port=free_port())
    assert config.token_file == system_file
    target = find_server(config)
    assert target is not None and target.url == f"http://127.0.0.1:{config.api_port}"
    assert target.token_file == system_file


def test_a_revoked_reader_is_told_so_and_not_retried(tmp_path: Path):
    service = HeadlessService(tmp_path / "server").start()
    client = RemoteService(service.url, service.users_add("leaver"), tmp_path / "cache")
    links: list[ServiceConnection] = []
    client.hub.subscribe(lambda e: links.append(e) if isinstance(e, ServiceConnection) else None)
    try:
        assert client.start()
        wait_for(lambda: links and links[-1].connected)
        service.users_revoke("leaver")
        with pytest.raises(TokenRefused):
            client.worklist.rows()
        service.stop()   # the open event stream ends; its reconnection is refused
        service.start()
        wait_for(lambda: links and "refused the token" in links[-1].message)
        assert not links[-1].connected and "retrying" not in links[-1].message
        wait_for(lambda: not client.events.alive)   # no retry loop filling the audit log
    finally:
        client.stop()
        service.stop()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)
