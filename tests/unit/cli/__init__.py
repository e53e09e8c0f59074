"""Unit tests of app/cli: the pure parts (rendering, messages)."""
