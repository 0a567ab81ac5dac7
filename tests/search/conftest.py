"""Fixtures of the embedding tests: a local OpenAI wire-format server."""

from tests.support.openai_server import fake_openai

__all__ = ["fake_openai"]
