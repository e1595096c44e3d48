"""Model packs served on a Ray Serve cluster (docs/cluster.md).

``wire`` and ``fanout`` are plain numpy (the service imports them); only ``deployments``
imports Ray, and only ``firstlook serve-models`` and the Ray workers import it.
"""
