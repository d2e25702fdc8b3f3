"""End-to-end tests: through the real gRPC server and the real clients."""
