"""Serving: predictions routed to deployed versions, explained, encrypted per subject, recorded by group commit."""
