"""Client frames: JSON rules and server frame encoding (codec), the one table of frame
types (registry) and the dispatcher that reads it. Imports no feature."""
