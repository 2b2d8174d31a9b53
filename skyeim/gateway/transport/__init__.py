"""The WebSocket layer: the socket (websocket), one connection's pumps (session),
admission and counting (connections, limits), and the echo endpoint."""
