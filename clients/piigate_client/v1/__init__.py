"""Generated from protos/piigate/v1 by protos/generate.py."""
