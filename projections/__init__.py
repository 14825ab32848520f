"""Read models: each consumes the event log in order and writes its own tables."""
