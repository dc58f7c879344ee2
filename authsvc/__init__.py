"""authsvc: a token authorization service for container registries."""
