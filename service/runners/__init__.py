"""Runners: execute a recorded pipeline (sklearn, torch or python kind) from its spec.

``executors.execute`` trains one run in the current process; ``child`` runs it in
a child process that a runner can poll, heartbeat around and kill;
``environment`` captures what the run executed on, with a digest, and resolves
the requested device.
"""
