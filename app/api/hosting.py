"""How the headless service hosts the API: the context from the running service, the local
token file, then the server. Called by ``app.service.run_headless``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from app import __version__
from app.api.context import ApiContext, NodeState
from app.api.local_token import write_local_token
from app.api.recent_errors import RecentErrors
from app.api.server import ApiServer
from app.core.audit import AuditLog
from app.core.config import Config
from app.core.events import EventHub
from app.core.service_api import ModelStatusView
from app.core.store import StudyStore
from app.core.users import UserDirectory

log = logging.getLogger(__name__)


class HostedService(Protocol):
    store: StudyStore
    hub: EventHub

    def models_status(self) -> Sequence[ModelStatusView]: ...
    def queue_length(self) -> int: ...
    def send_study(self, study_uid: str) -> int: ...


def outbox_counts(store: StudyStore) -> dict[str, int]:
    """Sends per state (queued, sending, sent, failed, stopped, superseded) for IT's page."""
    counts: dict[str, int] = {}
    for row in store.outbox.rows():
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def node_tracker(hub: EventHub) -> NodeState:
    """Subscribe before the service starts, so the node's first status is kept."""
    node = NodeState()
    hub.subscribe(node.on_event)
    return node


def start_api(config: Config, service: HostedService, node: NodeState,
              outbox_status: Callable[[], object] | None = None) -> ApiServer:
    """Write the local token, bind and serve; raises OSError if the port cannot be bound."""
    users = UserDirectory(service.store)
    ctx = ApiContext(config=config, store=service.store, hub=service.hub, users=users,
                     audit=AuditLog(config.data_dir), node=node, models_status=service.models_status,
                     queue_length=service.queue_length, errors=RecentErrors(),
                     outbox_status=outbox_status or (lambda: outbox_counts(service.store)),
                     send_study=service.send_study,
                     version=__version__)
    try:
        write_local_token(users, config.service_token_file, config.api_token_group)
    except OSError as exc:  # the API still serves the users IT added; only the local desktop must ask
        log.error("cannot write the local desktop's API token %s: %s", config.service_token_file, exc.strerror or exc)
    server = ApiServer(ctx)
    server.start()
    return server
