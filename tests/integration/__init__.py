"""Integration tests: parts against real local servers on loopback."""
