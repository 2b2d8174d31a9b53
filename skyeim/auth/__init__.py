"""The Auth service: users, passwords and token issuing (section 6 of PROTOCOL.md)."""
