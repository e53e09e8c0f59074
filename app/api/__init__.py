"""The HTTP API (FastAPI only here): routers, schemas, error handlers, dependency providers, docs."""
