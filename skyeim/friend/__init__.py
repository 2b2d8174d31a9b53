"""The Friend service: friendships, stored in both directions (section 6 of PROTOCOL.md)."""
