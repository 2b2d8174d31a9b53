"""The three services as the gateway sees them: HTTP clients, call batching, circuit breakers."""
