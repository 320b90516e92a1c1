"""Fixtures for every folder come from tests/support (a plugin: no imports needed in the tests)."""

pytest_plugins = ["tests.support.plugin"]
