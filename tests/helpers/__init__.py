"""Shared test utilities: reference implementations and small dataset writers."""
