"""Tests of netservices.multicast."""
