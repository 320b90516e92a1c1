"""The shared fixtures live in tests/support (a plugin, so every folder gets them without imports)."""

pytest_plugins = ["tests.support.plugin"]
