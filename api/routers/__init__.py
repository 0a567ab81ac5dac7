"""Routers per resource; `api.app` mounts them."""
