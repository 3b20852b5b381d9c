"""Inbound mail gateway: SMTP in, explainable verdict, durable relay out."""

__version__ = "0.1.0"
