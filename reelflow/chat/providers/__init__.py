"""Chat answerers on the providers' official SDKs; each module imports only its own SDK."""
