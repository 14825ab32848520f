"""A C2SP transparency-log witness (``mlledger witness serve``): cosigns the checkpoints of the
logs it follows when they extend what it saw, so that no log operator alone can show two histories.

It imports only the domain and the bottom of service/: a witness is meant to run
on a machine, and under an operator, that the ledger's do not control.
"""
