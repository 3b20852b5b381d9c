"""Observability: the per-transaction log line (and later metrics)."""
