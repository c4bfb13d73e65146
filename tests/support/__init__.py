"""Helpers shared by the tests (and the benchmarks): loopback servers, JWTs, the CLI as a
subprocess, the gunicorn load harness and throwaway databases."""
