"""The desktop's client of a FirstLook service over its HTTP API (``docs/api.md``).

Qt-free (httpx only): ``RemoteService`` offers the desktop the same interface as the embedded
service (``app.core.service_api.DesktopService``), so the UI cannot tell them apart; ``attach``
decides which one a desktop gets. The UI never imports this package: the wiring hands it in.

Modules: ``api_client`` (HTTP, bearer token, errors), ``event_stream`` (server-sent events with
reconnect and backoff), ``series_cache`` (WADO-RS into a local cache, verified by SOP Instance
UID), ``remote_store`` / ``remote_worklist`` (the two reading interfaces), ``remote_service``
(composition), ``attach`` (server, local service, or embedded).
"""

from app.client.attach import choose_service, find_server
from app.client.remote_service import RemoteService

__all__ = ["RemoteService", "choose_service", "find_server"]
