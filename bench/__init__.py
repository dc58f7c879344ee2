"""Load benchmark of the token endpoint against a minimal signing floor (see README.md)."""
