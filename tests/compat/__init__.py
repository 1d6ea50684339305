"""Restate compatibility: Restate's own TypeScript ingress client (``@restatedev/restate-sdk-clients``,
installed from npm) drives the examples through a real proxy process."""
