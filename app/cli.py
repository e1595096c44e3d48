"""The ``firstlook`` command: desktop app by default, headless service, and admin sub-commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from app import __version__
from app.core.config import Config, ConfigError, load_config
from app.core.models import ModelSpecs, default_specs

log = logging.getLogger("firstlook")


def _add_global_options(p: argparse.ArgumentParser, default: Any = None, modes: bool = True) -> None:
    """Options that apply to every sub-command. They are added to each sub-command too (with
    ``argparse.SUPPRESS`` as default, so a value given before the sub-command is kept), because
    users type ``firstlook studies --data-dir X`` as often as ``firstlook --data-dir X studies``."""
    def add(*names: str, **kwargs: Any) -> None:
        p.add_argument(*names, default=default, **kwargs)

    add("--config", type=Path, help="configuration file (default: the platform's config dir)")
    if modes:  # how the program runs, not settings: only before a sub-command
        add("--headless", action="store_true", help="run the DICOM node and analysis without a display")
        add("--self-test", action="store_true", dest="self_test",
            help="check packs, devices, models and the DICOM node on this machine; exit 1 on any failure")
    add("--data-dir", type=Path, dest="data_dir")
    add("--cache-dir", type=Path, dest="cache_dir")
    add("--packs-dir", type=Path, dest="packs_dir")
    add("--port", type=int)
    add("--ae-title", dest="ae_title")
    add("--bind")
    add("--allow-ae", action="append", dest="allow_ae", metavar="AET",
        help="accept this calling AE title (repeatable; none = accept any)")
    add("--allow-ip", action="append", dest="allow_ip", metavar="IP",
        help="accept this peer address or network (repeatable)")
    add("--quiet-period", type=float, dest="quiet_period_s", metavar="SECONDS",
        help="a series is ready after this long without a new instance")
    add("--max-associations", type=int, dest="max_associations")
    add("--min-free-mb", type=int, dest="min_free_mb")
    add("--log-level", dest="log_level")
    add("--tls-cert", type=Path, dest="tls_cert", metavar="PEM",
        help="server certificate (chain) for DICOM TLS; with --tls-key opens the TLS port")
    add("--tls-key", type=Path, dest="tls_key", metavar="PEM", help="unencrypted private key of --tls-cert")
    add("--tls-ca", type=Path, dest="tls_ca", metavar="PEM",
        help="CA certificate(s): require and verify client certificates")
    add("--tls-port", type=int, dest="tls_port", help="TCP port for DICOM TLS (default 2762)")
    add("--tls-only", action="store_const", const=True, dest="tls_only",
        help="listen only on the TLS port (no plaintext DICOM)")
    add("--server-url", dest="server_url", metavar="URL",
        help="desktop: attach to the FirstLook service at this URL (https://server:11113)")
    add("--api-bind", dest="api_bind", metavar="IP",
        help="address of the HTTP API (default 127.0.0.1; beyond loopback it needs --api-tls)")
    add("--api-port", type=int, dest="api_port", help="TCP port of the HTTP API (default 11113)")
    add("--api-tls", action="store_const", const=True, dest="api_tls",
        help="serve the HTTP API over HTTPS with --tls-cert/--tls-key")
    add("--uid-root", dest="uid_root", metavar="UID",
        help="UID root of the objects sent to PACS (default: UUID-derived 2.25 UIDs)")
    add("--backend", choices=("local", "ray"), dest="inference_backend",
        help="where models run: this machine (local) or a Ray Serve cluster (ray; docs/cluster.md)")
    add("--ray-address", dest="ray_address", metavar="HOST:PORT", help="the Ray head's address (GCS port, 6379)")


def build_parser(specs: ModelSpecs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="firstlook", description="FirstLook: offline AI first look at every scan.")
    p.add_argument("--version", action="version", version=f"firstlook {__version__}")
    _add_global_options(p)
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("studies", help="list stored studies")
    s.add_argument("--json", action="store_true")

    w = sub.add_parser("worklist", help="print the triage worklist as the desktop shows it")
    w.add_argument("--json", action="store_true")

    sub.add_parser("reindex", help="rebuild the index from the stored files")

    o = sub.add_parser("outbox", help="results sent to PACS: sent, queued, failing (with the reason)")
    o.add_argument("--json", action="store_true")
    r = sub.add_parser("resend", help="send a study's result objects to every destination again")
    r.add_argument("study_uid", metavar="STUDY_UID")

    a = sub.add_parser("analyze", help="analyse DICOM files or folders without the network")
    a.add_argument("paths", nargs="+", type=Path)
    a.add_argument("--json", action="store_true")
    a.add_argument("--device", help="OpenVINO device for every model (CPU, GPU, GPU.1, AUTO)")

    u = sub.add_parser("users", help="who may use the HTTP API: add NAME (prints the token), revoke NAME, list")
    u.add_argument("action", choices=["add", "revoke", "list"])
    u.add_argument("name", nargs="?")

    b = sub.add_parser("build-models", help="build the OpenVINO model packs (needs the build extra)")
    b.add_argument("--out", type=Path, help="folder for the packs (default: the configured packs dir)")
    b.add_argument("--shared", type=Path, help="folder with models/ and data/ (default: ../shared)")
    b.add_argument("--only", choices=list(specs.names))
    b.add_argument("--chexnet-checkpoint", type=Path)
    b.add_argument("--force", action="store_true")
    b.add_argument("--build-cache", type=Path, metavar="DIR",
                   help="content-addressed cache of built packs (default: ~/.cache/firstlook/pack-builds)")
    b.add_argument("--no-build-cache", action="store_true", help="neither use nor fill the build cache")
    m = sub.add_parser("serve-models", help="deploy the model packs on a running Ray cluster (the cluster extra)")
    m.add_argument("--no-batching", action="store_true", help="CheXNet without dynamic batching (for comparison)")
    m.add_argument("--shutdown", action="store_true", help="remove FirstLook's deployments from the cluster")
    m.add_argument("--only", choices=list(specs.names), help="deploy (or remove) this model only")
    for command in sub.choices.values():
        _add_global_options(command, default=argparse.SUPPRESS, modes=False)
    return p


CONFIG_KEYS = ("data_dir", "cache_dir", "packs_dir", "port", "ae_title", "bind", "allow_ae", "allow_ip",
                "quiet_period_s", "max_associations", "min_free_mb", "log_level",
                "tls_cert", "tls_key", "tls_ca", "tls_port", "tls_only", "server_url", "api_bind", "api_port", "api_tls",
                "uid_root", "inference_backend", "ray_address")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    specs = default_specs()  # the models this process knows; passed to everything that loops over models
    args = build_parser(specs).parse_args(argv)
    overrides: dict[str, Any] = {k: getattr(args, k) for k in CONFIG_KEYS}
    try:
        config = load_config(args.config, overrides, specs.names)
    except ConfigError as exc:
        print(f"firstlook: {exc}", file=sys.stderr)
        return 2
    if args.headless or (args.command is None and not args.self_test):
        # The node will listen: its certificate files must load (the self-test reports them instead).
        from dicom_node.tls import server_context

        try:
            server_context(config)
        except ConfigError as exc:
            print(f"firstlook: {exc}", file=sys.stderr)
            return 2
    _setup_logging(config.log_level)
    if args.self_test:
        from app.commands.selftest import run_cli

        return run_cli(config, specs=specs)
    command = args.command
    if command == "studies":
        return _studies(config, args.json)
    if command == "worklist":
        from app.commands.worklist import run as worklist

        return worklist(config, args.json)
    if command == "reindex":
        return _reindex(config)
    if command == "users":
        if (args.action == "list") != (args.name is None):
            print("firstlook: usage: firstlook users add NAME | users revoke NAME | users list", file=sys.stderr)
            return 2
        from app.commands.users import run_users

        return run_users(config, args.action, args.name)
    if command in ("outbox", "resend"):
        from app.commands import outbox

        if command == "outbox":
            return outbox.show_outbox(config, args.json)
        return outbox.resend(config, args.study_uid, specs)
    if command == "analyze":
        from app.commands.analyze_files import analyze_paths

        return analyze_paths(config, args.paths, as_json=args.json, device=args.device, specs=specs)
    if command == "build-models":
        try:
            from inference.pack_builder.cli import build_models
        except ImportError:  # the installed bundle ships the packs, not the build tools
            print("firstlook: build-models is not part of the installed program; "
                  "build packs from a source checkout (make models).", file=sys.stderr)
            return 2

        return build_models(out=args.out or config.packs_dir, shared=args.shared, only=args.only,
                            chexnet_checkpoint=args.chexnet_checkpoint, force=args.force,
                            build_cache=args.build_cache, use_build_cache=not args.no_build_cache)
    if command == "serve-models":
        try:
            from app.cluster.deploy import serve_models
        except ImportError as exc:  # ray is the optional "cluster" extra
            print(f"firstlook: serve-models needs the cluster extra (pip install 'firstlook[cluster]'): {exc}",
                  file=sys.stderr)
            return 2

        return serve_models(config, specs, batching=not args.no_batching, shutdown=args.shutdown, only=args.only)
    if args.headless:
        from app.service import run_headless

        return run_headless(config)
    from app.client import choose_service
    from app.core.service_api import DesktopService
    from app.service import Service
    from ui.main import run_desktop

    def embedded(cfg: Config) -> Service:
        return Service(cfg, specs=specs)

    def service(cfg: Config) -> DesktopService:  # a configured or local service, else the embedded one
        return choose_service(cfg, embedded)

    return run_desktop(config, service, config_path=args.config, specs=specs)


def _studies(config: Config, as_json: bool) -> int:
    from app.core.store import StudyStore

    store = StudyStore(config.data_dir)
    studies = store.list_studies()
    # The listing shows patient names and IDs: record who asked (firstlookctl runs as the
    # service user under sudo, so the administrator is SUDO_USER).
    from app.core.audit import STUDIES_LISTED, AuditLog, os_user

    AuditLog(config.data_dir).append(STUDIES_LISTED, user=os_user(), sudo_user=os.environ.get("SUDO_USER"),
                                     studies=len(studies))
    if as_json:
        import datetime

        rows = []
        for s in studies:
            row = s.to_json()
            row["received"] = datetime.datetime.fromtimestamp(s.first_received).astimezone().isoformat(timespec="seconds")
            rows.append(row)
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not studies:
        sys.stdout.write("no studies stored\n")
        return 0
    import datetime

    header = f"{'received':19}  {'patient id':12} {'patient name':24} {'mod':6} {'ser':>3} {'inst':>5}  {'from AE':16} description / study UID\n"
    sys.stdout.write(header)
    for s in studies:
        when = datetime.datetime.fromtimestamp(s.first_received).strftime("%Y-%m-%d %H:%M:%S")
        sys.stdout.write(f"{when}  {s.patient_id[:12]:12} {s.patient_name[:24]:24} {s.modalities[:6]:6} "
                         f"{s.n_series:>3} {s.n_instances:>5}  {s.calling_ae[:16]:16} {s.description} / {s.study_uid}\n")
    return 0


def _reindex(config: Config) -> int:
    from app.core.store import StudyStore

    store, count = StudyStore.rebuild(config.data_dir)
    problems = store.verify()
    sys.stdout.write(f"reindexed {count} instance(s) from {config.data_dir}\n")
    for problem in problems:
        sys.stdout.write(f"  {problem}\n")
    return 0 if not problems else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
