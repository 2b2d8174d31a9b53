"""The client REST API under /api (PROTOCOL.md section 7; docs/protocol.md "Groups")."""
