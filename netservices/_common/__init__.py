"""
What every netservices service shares, written once: listening on endpoint
descriptions, PROXY protocol, connection limits, rate limits, UDP policy and
logging.

This package is internal; services import from its modules directly.
"""
