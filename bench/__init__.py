"""Benchmarks: load generators for piigate and its development stand-ins."""
