"""The wiring and the domain end to end: config, CLI, service, pipeline, self-test, installer."""
