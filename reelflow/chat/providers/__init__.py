"""Chat answerers on the providers' official SDKs; each module imports only its own SDK."""

import httpx
import httpx2

TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)
"""Raised as they are by Anthropic's and Gemini's SDKs when a stream breaks off midway."""
