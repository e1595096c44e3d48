"""The desktop client's tests: a real headless service with its API (tests/support/api_service.py)."""
