"""Service-level tests: real services over in-memory streams, in virtual time."""
