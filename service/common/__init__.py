"""Small building blocks every role of the service shares: shared calls, bounded caches, background loops."""
