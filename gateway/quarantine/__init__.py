"""Quarantine: the store of held messages, and the admin operations on it."""
