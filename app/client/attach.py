"""Which service a desktop uses: a configured server, a service already running on this
machine (its API answers on 127.0.0.1:api_port and its local token file is readable; the
installed service's token file alone is enough, systemd removes it when the service stops), or,
with neither, the embedded service in this process, as a single workstation always had.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from app.client.remote_service import RemoteService
from app.core import config as config_module
from app.core.config import Config, ConfigError
from app.core.service_api import DesktopService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerTarget:
    url: str
    token: str
    verify: bool | str = True
    token_file: Path | None = None  # where the token came from (read again when refused)


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def _local_answers(url: str, token: str, verify: bool | str, timeout_s: float) -> bool:
    try:
        response = httpx.get(f"{url}/api/v1/status", headers={"Authorization": f"Bearer {token}"},
                             timeout=timeout_s, verify=verify)
    except httpx.HTTPError:
        return False
    if response.status_code == 401:
        log.warning("the local service at %s refused the token in its token file", url)
    return response.status_code == 200


def find_server(config: Config, probe_timeout_s: float = 1.0) -> ServerTarget | None:
    """The service this desktop should attach to, or None for the embedded one."""
    local_token = read_token(config.token_file)
    if config.server_url:
        token = config.api_token or local_token
        if not token:
            raise ConfigError(f"server_url is {config.server_url} but there is no api_token and no readable "
                              f"token file at {config.token_file}; ask IT for a token (firstlook users add NAME).")
        verify = str(config.server_ca) if config.server_ca is not None else True
        return ServerTarget(config.server_url.rstrip("/"), token, verify,
                            None if config.api_token else config.token_file)
    if not local_token:
        return None
    scheme = "https" if config.api_tls else "http"
    verify = str(config.tls_cert) if config.api_tls and config.tls_cert else True
    url = f"{scheme}://127.0.0.1:{config.api_port}"
    if not _local_answers(url, local_token, verify, probe_timeout_s):
        if config.token_file == config_module.SYSTEM_TOKEN_FILE:
            # systemd removes /run/firstlook when the service stops: it is starting. Attach and
            # retry rather than start a second node and store next to it.
            log.info("the installed service does not answer yet; attaching and retrying")
            return ServerTarget(url, local_token, verify, config.token_file)
        return None  # a token file a stopped service left behind
    return ServerTarget(url, local_token, verify, config.token_file)


def cache_dir_for(config: Config, url: str) -> Path:
    """One cache per server (a desktop may be pointed elsewhere later)."""
    return config.cache_dir / "servers" / hashlib.sha256(url.encode()).hexdigest()[:16]


def choose_service(config: Config, embedded: Callable[[Config], DesktopService]) -> DesktopService:
    """The wiring's service factory for the desktop (runs on the desktop's service thread)."""
    target = find_server(config)
    if target is None:
        log.info("no FirstLook service to attach to; starting the embedded service")
        return embedded(config)
    log.info("attaching to the FirstLook service at %s", target.url)
    return RemoteService(target.url, target.token, cache_dir_for(config, target.url), verify=target.verify,
                         token_file=target.token_file, cache_max_bytes=int(config.cache_max_gb * 1e9))
