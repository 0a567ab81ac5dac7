"""Provider tests (transcription, embeddings) and their local OpenAI-compatible server."""
