"""Typed contracts shared by the API, workflows and activities; tables and migrations."""
