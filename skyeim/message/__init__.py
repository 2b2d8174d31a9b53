"""The Message service: stores chats (PROTOCOL.md section 6)."""
