"""FirstLook composition root and domain: config, study store, routing, jobs, worklist. No Qt."""

__version__ = "0.1.0"
