"""Group commit for serving: predictions (and what a request records with them) share transactions.

The committer is the ledger's own (:mod:`service.application.group_commit`):
the API process opens one and every command, prediction or other, is recorded
through it (:func:`service.serving.runtime.open_serving`). Serving hands a
request's items over with :meth:`GroupCommitter.submit` and waits on the
returned future for the ledger position of its last event.

:class:`~service.common.group_call.GroupCall` applies the same idea to work before
the commit: concurrent callers of one function (a freshness check, a model's
predictions) share one call of it.
"""

from __future__ import annotations

from service.application.group_commit import GroupCommitter, WriterStopped

__all__ = ["GroupCommitter", "WriterStopped"]
