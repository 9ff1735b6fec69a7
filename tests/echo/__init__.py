"""Tests for netservices.echo."""
