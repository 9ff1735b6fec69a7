"""Tests for netservices.threaded."""
