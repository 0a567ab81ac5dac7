"""Fixtures of the transcription tests: a local OpenAI wire-format server and espeak speech."""

from tests.support.openai_server import fake_openai, speak

__all__ = ["fake_openai", "speak"]
