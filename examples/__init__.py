"""Runnable examples of services that call piigate (each folder has its README)."""
