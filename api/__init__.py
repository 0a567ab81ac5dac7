"""The HTTP API v1 (FastAPI). Run `uvicorn api.app:app_factory --factory`."""
