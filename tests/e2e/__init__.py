"""End-to-end tests: real proxy and handler processes, SIGKILL and restarts."""
