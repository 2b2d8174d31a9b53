"""The WebSocket gateway; its module map is docs/architecture.md."""
