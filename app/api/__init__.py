"""The service's HTTP API (docs/api.md): DICOMweb, the desktop's JSON API, live events, a status
page. Wiring level: it reads the domain (``app.core``) and is started by ``app.service``; nothing
in the domain, the node, the desktop or the inference runtime imports it, and it never imports Qt.
"""
