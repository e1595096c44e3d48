"""The Ray cluster backend (docs/cluster.md): the service's HTTP client of the Serve deployments,
the remote runtimes the model registry uses when ``inference_backend = "ray"``, and
``firstlook serve-models`` (``deploy``, the only module here that imports Ray)."""
