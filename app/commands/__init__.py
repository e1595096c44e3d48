"""Sub-commands of ``firstlook``: wiring like ``app.service``, imported only by ``app.cli``."""
