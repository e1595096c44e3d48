"""FirstLook configuration: one TOML file, every key overridable on the command line.

Invalid values stop start-up with one sentence an IT admin can act on, never a traceback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import platformdirs

from app.core.destinations import Destination, DestinationError, check_uid_root, parse_destinations

log = logging.getLogger(__name__)

APP_NAME = "firstlook"
# The installed service's local token (firstlook.toml's api_token_file; systemd RuntimeDirectory).
SYSTEM_TOKEN_FILE = Path("/run/firstlook/local-token")


class ConfigError(Exception):
    """A configuration value that cannot be used; the message is one sentence."""


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "firstlook.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME))


def _repo_packs_dir() -> Path:
    """Packs built by ``firstlook build-models`` in a checkout; inside the PyInstaller bundle
    they ship with the program (``_internal/model-packs``), so an upgrade replaces them too."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        return Path(bundle) / "model-packs"
    return Path(__file__).resolve().parents[2] / "build" / "model-packs"


@dataclass
class Config:
    ae_title: str = "FIRSTLOOK"
    port: int = 11112
    bind: str = "127.0.0.1"
    data_dir: Path = field(default_factory=default_data_dir)
    cache_dir: Path = field(default_factory=default_cache_dir)
    packs_dir: Path = field(default_factory=_repo_packs_dir)
    allow_ae: list[str] = field(default_factory=list)
    allow_ip: list[str] = field(default_factory=list)
    quiet_period_s: float = 5.0
    max_associations: int = 16
    min_free_mb: int = 500
    devices: dict[str, str] = field(default_factory=dict)  # model -> device; unnamed models run on CPU
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_port: int = 2762   # IANA "dicom-tls"; opened next to ``port`` when tls_cert/tls_key are set
    tls_only: bool = False  # True: only the TLS port listens (no plaintext DICOM at all)
    log_level: str = "INFO"
    # A desktop attached to a FirstLook service (app/client, docs/api.md). Empty server_url: the
    # service on this machine if its API answers (api_port, token file), else the embedded one.
    server_url: str = ""
    api_token: str = ""            # the reader's token from IT (firstlook users add NAME); empty: the token file
    server_ca: Path | None = None  # CA certificate(s) of an https server_url signed by a private CA
    cache_max_gb: float = 20.0     # an attached desktop's image cache: least recently opened series go first
    # The HTTP API (app/api, docs/api.md): DICOMweb + /api/v1 for desktops and IT's status page.
    api_bind: str = "127.0.0.1"
    api_port: int = 11113
    api_tls: bool = False   # HTTPS with tls_cert/tls_key; required when api_bind is not loopback
    api_token_file: Path | None = None  # the local desktop's credential; default <data_dir>/api/local-token
    api_token_group: str = ""           # group that may read it (install.sh: firstlook-desktop)
    destinations: list[Destination] = field(default_factory=list)  # [[destinations]]: where results are sent
    uid_root: str | None = None        # root of the UIDs of the objects FirstLook creates (default: 2.25.<uuid>)
    send_retry_s: float = 10.0         # first retry after a failed send; doubles per attempt ...
    send_retry_max_s: float = 600.0    # ... up to this
    outbox_keep_days: float = 30.0     # files of objects sent everywhere are deleted this long after (rows stay)
    # Where models run (docs/cluster.md): "local" (this machine) or "ray" (a Ray Serve cluster
    # reached at ray_address; its Serve HTTP endpoint is the same host on ray_serve_port).
    inference_backend: str = "local"
    ray_address: str = ""
    ray_serve_port: int = 8000
    cluster_replicas: dict[str, int] = field(default_factory=dict)      # model -> replicas (default 1)
    cluster_cpus: dict[str, float] = field(default_factory=dict)        # model -> CPUs per replica (default 1)
    cluster_gpus: dict[str, float] = field(default_factory=dict)        # model -> GPUs per replica (default 0)
    cluster_call_deadline_s: float = 60.0     # one remote call (a film, one BLAST-CT work item)
    cluster_study_deadline_s: float = 1800.0  # one whole study on the cluster
    # Dispatch order under backlog: calling AE -> "high", "medium" or "low" (DICOM's priorities);
    # a C-STORE request's Priority raises a series too.
    ae_priority: dict[str, str] = field(default_factory=dict)

    def validate(self, model_names: Sequence[str] | None = None) -> "Config":
        """Raise ConfigError for the first value that cannot work.

        ``model_names`` are the models ``devices`` and ``thresholds`` may name: the names of the
        spec collection the caller uses (``ModelSpecs.names``). The configuration does not know
        the models itself (the node reads it and must not reach the model runtimes), so without
        names only the values are checked.
        """
        validate_ae_title(self.ae_title, "ae_title")
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be a whole number from 1 to 65535, not {self.port!r}.")
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError(f"bind must be an IP address such as 127.0.0.1 or 0.0.0.0, not {self.bind!r}.") from None
        for aet in self.allow_ae:
            validate_ae_title(aet, "allow_ae")
        for ip in self.allow_ip:
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise ConfigError(f"allow_ip entry {ip!r} is not an IP address or network.") from None
        if not isinstance(self.quiet_period_s, (int, float)) or not 0.1 <= float(self.quiet_period_s) <= 3600:
            raise ConfigError(f"quiet_period_s must be between 0.1 and 3600 seconds, not {self.quiet_period_s!r}.")
        if not isinstance(self.max_associations, int) or not 1 <= self.max_associations <= 256:
            raise ConfigError(f"max_associations must be from 1 to 256, not {self.max_associations!r}.")
        if not isinstance(self.min_free_mb, int) or self.min_free_mb < 0:
            raise ConfigError(f"min_free_mb must be a whole number of megabytes >= 0, not {self.min_free_mb!r}.")
        for model, device in self.devices.items():
            if model_names is not None and model not in model_names:
                known = ", ".join(model_names)
                raise ConfigError(f"devices has an unknown model {model!r}; known models are {known}.")
            if not isinstance(device, str) or not device or not device.replace(".", "").replace(":", "").replace(",", "").isalnum():
                raise ConfigError(f"device for {model} must be a name such as CPU, GPU, GPU.1 or AUTO, not {device!r}.")
        for model, table in self.thresholds.items():
            if (model_names is not None and model not in model_names) or not isinstance(table, dict):
                known = ", ".join(model_names or ())
                raise ConfigError(f"thresholds has an unknown model {model!r}; known models are {known}.")
            for label, value in table.items():
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    raise ConfigError(f"threshold {model}.{label} must be a number >= 0, not {value!r}.")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together.")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("tls_ca (client certificate verification) needs tls_cert and tls_key as well.")
        if not isinstance(self.tls_port, int) or isinstance(self.tls_port, bool) or not 1 <= self.tls_port <= 65535:
            raise ConfigError(f"tls_port must be a whole number from 1 to 65535, not {self.tls_port!r}.")
        if not isinstance(self.tls_only, bool):
            raise ConfigError(f"tls_only must be true or false, not {self.tls_only!r}.")
        if self.tls_only and self.tls_cert is None:
            raise ConfigError("tls_only needs tls_cert and tls_key (otherwise nothing would listen).")
        if self.tls_cert is not None and not self.tls_only and self.tls_port == self.port:
            raise ConfigError(f"tls_port and port are both {self.port}; give TLS its own port (2762 is usual) "
                              "or set tls_only = true.")
        self._validate_api()
        self._validate_client()
        try:
            self.destinations = parse_destinations(self.destinations)
            self.uid_root = check_uid_root(self.uid_root)
        except DestinationError as exc:
            raise ConfigError(str(exc)) from None
        for key in ("send_retry_s", "send_retry_max_s"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.1 <= value <= 86400:
                raise ConfigError(f"{key} must be between 0.1 and 86400 seconds, not {value!r}.")
        if self.send_retry_max_s < self.send_retry_s:
            raise ConfigError("send_retry_max_s must not be smaller than send_retry_s.")
        if isinstance(self.outbox_keep_days, bool) or not isinstance(self.outbox_keep_days, (int, float)) \
                or not 0 <= self.outbox_keep_days <= 36500:
            raise ConfigError(f"outbox_keep_days must be a number of days from 0 to 36500, not {self.outbox_keep_days!r}.")
        self._validate_cluster(model_names)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}.")
        return self

    def _validate_api(self) -> None:
        try:
            address = ipaddress.ip_address(self.api_bind)
        except ValueError:
            raise ConfigError(f"api_bind must be an IP address such as 127.0.0.1 or 0.0.0.0, not {self.api_bind!r}.") from None
        if not isinstance(self.api_port, int) or isinstance(self.api_port, bool) or not 1 <= self.api_port <= 65535:
            raise ConfigError(f"api_port must be a whole number from 1 to 65535, not {self.api_port!r}.")
        # api_port equal to a DICOM port is not refused here: a desktop's configuration from before the
        # API may use 11113 for its embedded node, which serves no API; the headless service that
        # would bind both says "HTTP API not started: cannot listen on ..." at start.
        if not isinstance(self.api_tls, bool):
            raise ConfigError(f"api_tls must be true or false, not {self.api_tls!r}.")
        if self.api_tls and self.tls_cert is None:
            raise ConfigError("api_tls needs tls_cert and tls_key (the API uses the DICOM TLS certificate).")
        if not address.is_loopback and not self.api_tls:
            raise ConfigError(f"api_bind {self.api_bind} reaches beyond this machine, so the API must use TLS: "
                              "set api_tls = true with tls_cert and tls_key, or bind it to 127.0.0.1.")

    @property
    def service_token_file(self) -> Path:
        """Where the service writes the local desktop's API token: ``api_token_file``, else
        ``<data_dir>/api/local-token``."""
        return self.api_token_file if self.api_token_file is not None else self.data_dir / "api" / "local-token"

    @property
    def token_file(self) -> Path:
        """Where a desktop on this machine reads the local service's token: ``api_token_file``,
        else the installed service's (``SYSTEM_TOKEN_FILE``, install.sh) when it exists, else
        ``<data_dir>/api/local-token`` (a service run by the same user with the same data dir)."""
        if self.api_token_file is not None:
            return self.api_token_file
        if SYSTEM_TOKEN_FILE.exists():
            return SYSTEM_TOKEN_FILE
        return self.service_token_file

    def _validate_client(self) -> None:
        if not isinstance(self.server_url, str):
            raise ConfigError(f"server_url must be text such as https://firstlook.hospital:11113, not {self.server_url!r}.")
        if self.server_url:
            validate_server_url(self.server_url)
        if not isinstance(self.api_token, str) or any(c.isspace() for c in self.api_token):
            raise ConfigError("api_token must be the token IT gave you, on one line without spaces.")
        if self.server_ca is not None and not self.server_url.startswith("https://"):
            raise ConfigError("server_ca is only used with an https:// server_url.")
        if isinstance(self.cache_max_gb, bool) or not isinstance(self.cache_max_gb, (int, float)) \
                or not 0.1 <= float(self.cache_max_gb) <= 100_000:
            raise ConfigError(f"cache_max_gb must be a number of gigabytes from 0.1 to 100000, not {self.cache_max_gb!r}.")
    def _validate_cluster(self, model_names: Sequence[str] | None) -> None:
        if self.inference_backend not in ("local", "ray"):
            raise ConfigError(f"inference_backend must be \"local\" or \"ray\", not {self.inference_backend!r}.")
        if self.inference_backend == "ray" and not self.ray_address:
            raise ConfigError("inference_backend = \"ray\" needs ray_address (host:port of the Ray head, e.g. 10.0.0.5:6379).")
        if self.ray_address and (":" not in self.ray_address or not self.ray_address.rsplit(":", 1)[1].isdigit()):
            raise ConfigError(f"ray_address must be host:port such as 10.0.0.5:6379, not {self.ray_address!r}.")
        if not isinstance(self.ray_serve_port, int) or isinstance(self.ray_serve_port, bool) \
                or not 1 <= self.ray_serve_port <= 65535:
            raise ConfigError(f"ray_serve_port must be a whole number from 1 to 65535, not {self.ray_serve_port!r}.")
        for key, low in (("cluster_replicas", 1), ("cluster_cpus", 0), ("cluster_gpus", 0)):
            table = getattr(self, key)
            if not isinstance(table, dict):
                raise ConfigError(f"{key} must be a table of model = number.")
            for model, value in table.items():
                if model_names is not None and model not in model_names:
                    raise ConfigError(f"{key} has an unknown model {model!r}; known models are {', '.join(model_names)}.")
                whole = key == "cluster_replicas"
                if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value < low:
                    raise ConfigError(f"{key}.{model} must be a {'whole ' if whole else ''}number >= {low}, not {value!r}.")
        for key in ("cluster_call_deadline_s", "cluster_study_deadline_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= 86400:
                raise ConfigError(f"{key} must be between 0.1 and 86400 seconds, not {value!r}.")
        if not isinstance(self.ae_priority, dict):
            raise ConfigError("ae_priority must be a table of calling AE title = \"high\", \"medium\" or \"low\".")
        for aet, level in self.ae_priority.items():
            validate_ae_title(aet, "ae_priority")
            if level not in ("high", "medium", "low"):
                raise ConfigError(f"ae_priority.{aet} must be \"high\", \"medium\" or \"low\", not {level!r}.")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    def to_toml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            if key == "destinations":
                value = [d.to_toml() if isinstance(d, Destination) else d for d in self.destinations]
            out[key] = str(value) if isinstance(value, Path) else value
        return out


def validate_server_url(url: str) -> str:
    """http(s)://host[:port]; plain http only to this machine (a server beyond it requires TLS)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"server_url {url!r} is not a URL such as https://firstlook.hospital:11113.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"server_url {url!r} is not a URL such as https://firstlook.hospital:11113.")
    if port == 0:
        raise ConfigError(f"server_url {url!r} names port 0.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"server_url {url!r} reaches beyond this machine, so it must start with https://.")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_ae_title(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty AE title.")
    if len(value) > 16:
        raise ConfigError(f"{key} {value!r} is longer than 16 characters.")
    if "\\" in value or any(ord(c) < 32 or ord(c) > 126 for c in value):
        raise ConfigError(f"{key} {value!r} may contain only printable ASCII characters and no backslash.")
    return value


_PATH_KEYS = {"server_ca", "data_dir", "cache_dir", "packs_dir", "tls_cert", "tls_key", "tls_ca", "api_token_file"}
_KNOWN = {f.name for f in fields(Config)}


def _coerce(values: dict[str, Any], source: str, model_names: Sequence[str] | None) -> dict[str, Any]:
    unknown = sorted(set(values) - _KNOWN)
    if unknown:
        raise ConfigError(f"{source} has unknown key(s) {', '.join(unknown)}; known keys are {', '.join(sorted(_KNOWN))}.")
    out = dict(values)
    for key in _PATH_KEYS & set(out):
        if out[key] is not None:
            out[key] = Path(os.path.expanduser(str(out[key])))
    for key in ("allow_ae", "allow_ip"):
        if key in out and isinstance(out[key], str):
            out[key] = [out[key]]
        if key in out and not isinstance(out[key], list):
            raise ConfigError(f"{key} must be a list of strings.")
    if "destinations" in out:
        try:
            out["destinations"] = parse_destinations(out["destinations"])
        except DestinationError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if "devices" in out:
        if not isinstance(out["devices"], dict):
            raise ConfigError("devices must be a table of model = device.")
        out["devices"] = {**{m: "CPU" for m in model_names or ()}, **out["devices"]}
    return out


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None,
                model_names: Sequence[str] | None = None) -> Config:
    """Defaults <- TOML file (if it exists) <- command-line overrides, then validated.

    ``model_names`` (the specs' names) makes unknown models an error and gives every model a
    device entry; the wiring always passes them.
    """
    names = tuple(model_names) if model_names is not None else None
    path = path or default_config_path()
    values: dict[str, Any] = {}
    if path.exists():
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the configuration file {path}: {exc}.") from None
        values = _coerce(values, f"the configuration file {path}", names)
    cli = _coerce({k: v for k, v in (overrides or {}).items() if v is not None}, "the command line", names)
    try:
        defaults = Config(devices={m: "CPU" for m in names or ()})
        config = replace(defaults, **{**values, **cli})
    except TypeError as exc:
        raise ConfigError(f"configuration error: {exc}.") from None
    return config.validate(names)


def save_config(config: Config, path: Path | None = None, model_names: Sequence[str] | None = None) -> Path:
    """Validate, then write atomically so a crash never leaves half a config file. Mode 0600:
    a reading desktop's file holds the user's API token."""
    import tomli_w

    config.validate(model_names)
    path = path or default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)   # a leftover tmp file of another mode keeps its mode on O_CREAT
        fh.write(tomli_w.dumps(config.to_toml_dict()).encode("utf-8"))
    os.replace(tmp, path)
    return path
