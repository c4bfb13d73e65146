"""The HTTP layer around the pipeline, one concern per module: typed per-process state,
CORS, authentication, request bodies, error answers, health/readiness and metrics.
``cds_hooks.app.create_app`` wires them together."""
