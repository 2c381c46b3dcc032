"""Running calls: wire protocol, serialization, compression and the client transport."""
