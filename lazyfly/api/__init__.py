"""Request and response models of lazyfly's daemon APIs, shared by their servers and clients.

Rule: models are pure dataclasses with `to_json`/`from_json` (no I/O, no transport); the adapters
that carry them (lazyfly.http_unix) and the servers that answer them live elsewhere.
"""
