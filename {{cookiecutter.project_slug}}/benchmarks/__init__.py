"""Benchmarks: scripts that print figures. They assert nothing and are not tests."""
