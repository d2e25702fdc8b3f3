"""Unit tests: pure functions and single parts, no servers."""
