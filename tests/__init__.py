"""piigate's tests: unit, integration, e2e and fuzz, helpers in `support`."""
