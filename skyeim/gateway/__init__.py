"""The WebSocket gateway: transport, frames, hub, session, core flows, Flask app."""
