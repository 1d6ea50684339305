"""Restate's own CLI (``restate``, from npm ``@restatedev/restate``) against a real proxy and the examples."""
