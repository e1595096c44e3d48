"""The service's state for IT: one snapshot (``/api/v1/status``) and the read-only HTML page
(``/status``) rendered from it. No patient data: counts, models, devices, disk, errors."""

from __future__ import annotations

import html
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from app.api.context import ApiContext
from app.api.recent_errors import stamp


def status_snapshot(ctx: ApiContext, user: str) -> dict[str, Any]:
    listening, message = ctx.node.snapshot()
    cfg = ctx.config
    try:
        free = ctx.store.free_bytes()
    except OSError:
        free = None
    refusing = "REFUSING" in message
    outbox = None
    if ctx.outbox_status is not None:
        try:
            outbox = ctx.outbox_status()
        except Exception as exc:  # the page must render whatever the outbox does
            outbox = {"error": str(exc)}
    return {
        "version": ctx.version, "user": user, "generated_at": time.time(),
        "node": {"listening": listening, "message": message, "ae_title": cfg.ae_title, "bind": cfg.bind,
                 "port": cfg.port, "tls_port": cfg.tls_port if cfg.tls_cert is not None else None},
        "models": [{"name": m.name, "state": m.state, "device": m.device, "message": m.message,
                    "validated": m.validated} for m in ctx.models_status()],
        "queue_length": ctx.queue_length(),
        "disk": {"free_bytes": free, "min_free_bytes": ctx.store.min_free_bytes, "refusing": refusing,
                 "message": message.split("REFUSING new instances: ", 1)[-1] if refusing else ""},
        "last_errors": ctx.errors.recent(),
        "outbox": outbox,
    }


def _gb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.1f} GB"


def render_page(snap: dict[str, Any]) -> str:
    e = html.escape
    node = snap["node"]
    ok = node["listening"] and not snap["disk"]["refusing"] and all(m["state"] != "unavailable" for m in snap["models"])
    models = "".join(
        f"<tr><td>{e(m['name'])}</td><td class='{e(m['state'])}'>{e(m['state'])}</td><td>{e(m['device'])}</td>"
        f"<td>{'yes' if m['validated'] else 'NO' if m['validated'] is False else '-'}</td><td>{e(m['message'])}</td></tr>"
        for m in snap["models"]) or "<tr><td colspan=5>no models</td></tr>"
    errors = "".join(
        f"<tr><td>{e(stamp(r['time']))}</td><td>{e(r['level'])}</td><td>{e(r['logger'])}</td><td>{e(r['message'])}</td></tr>"
        for r in snap["last_errors"]) or "<tr><td colspan=4>none since start</td></tr>"
    outbox = snap["outbox"]
    outbox_text = "not configured in this version" if outbox is None else e(str(outbox))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FirstLook service status</title>
<meta http-equiv="refresh" content="10">
<style>
body {{ font-family: sans-serif; margin: 2em; background: #f7f7f7; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.5em; }}
table {{ border-collapse: collapse; background: white; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
.badge {{ display: inline-block; padding: 6px 14px; border-radius: 4px; color: white; font-weight: bold;
          background: {'#2e7d32' if ok else '#c62828'}; }}
.ready {{ color: #2e7d32; }} .unavailable {{ color: #c62828; }}
</style></head><body>
<h1>FirstLook service <small>{e(snap['version'])}</small></h1>
<p><span class="badge" id="overall">{'OK' if ok else 'ATTENTION'}</span>
 &nbsp; generated {e(stamp(snap['generated_at']))} (refreshes every 10 s; read-only)</p>
<h2>DICOM node</h2>
<table id="node"><tr><th>listening</th><td>{'yes' if node['listening'] else 'NO'}</td></tr>
<tr><th>status</th><td>{e(node['message'])}</td></tr>
<tr><th>AE title</th><td>{e(node['ae_title'])}</td></tr>
<tr><th>address</th><td>{e(node['bind'])}:{node['port']}{'' if node['tls_port'] is None else f", TLS {node['tls_port']}"}</td></tr></table>
<h2>Models and devices</h2>
<table id="models"><tr><th>model</th><th>state</th><th>device</th><th>validated</th><th>note</th></tr>{models}</table>
<h2>Analysis queue</h2><p id="queue">{snap['queue_length']} series waiting</p>
<h2>Outbox</h2><p id="outbox">{outbox_text}</p>
<h2>Disk</h2><p id="disk">{_gb(snap['disk']['free_bytes'])} free (refuses new instances below
{_gb(snap['disk']['min_free_bytes'])}){' - REFUSING: ' + e(snap['disk']['message']) if snap['disk']['refusing'] else ''}</p>
<h2>Last warnings and errors</h2>
<table id="errors"><tr><th>time</th><th>level</th><th>where</th><th>message</th></tr>{errors}</table>
</body></html>
"""


def page_endpoint(ctx: ApiContext):  # type: ignore[no-untyped-def]
    def status_page(request: Request) -> Response:
        snap = status_snapshot(ctx, str(request.scope.get("user", "")))
        if "application/json" in request.headers.get("accept", "") and "text/html" not in request.headers.get("accept", ""):
            return JSONResponse(snap)
        return HTMLResponse(render_page(snap), headers={"Cache-Control": "no-store"})
    return status_page
