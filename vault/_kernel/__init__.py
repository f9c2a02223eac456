"""The kernel of Vault (package-private): what the services share.

- :class:`Kernel` (:mod:`.kernel`): one frozen object per open vault holding the
  settings, engines, key store and provider, cipher, blind indexer,
  pseudonymiser, policy engine, the rules loaded from ``policies/`` and the
  one clock; with the audit helpers every service uses.
- :class:`Call` (:mod:`.work`): the unit of work of one data call (actor,
  action, collection, purpose), its retried transaction with the audit
  events appended before the commit, and ``refuse``.
- the hooks protocols (:mod:`.hooks`) through which one service's write
  reaches another's state, wired by the facade.
- bootstrap (:mod:`.bootstrap`): ``init``, ``open_kernel``, ``upgrade``.

Nothing above the services imports this package but the facade.
"""

from vault._kernel.bootstrap import init, open_kernel, settings_of, upgrade
from vault._kernel.hooks import ConsentHooks, RecordHooks, SubjectHooks
from vault._kernel.kernel import (
    ADMIN_PURPOSE,
    NAMED_LIMIT,
    REASON_LIMIT,
    Kernel,
    Rules,
    factor_context,
)
from vault._kernel.work import Call, transaction_failed

__all__ = [
    "ADMIN_PURPOSE",
    "NAMED_LIMIT",
    "REASON_LIMIT",
    "Call",
    "ConsentHooks",
    "Kernel",
    "RecordHooks",
    "Rules",
    "SubjectHooks",
    "factor_context",
    "init",
    "open_kernel",
    "settings_of",
    "transaction_failed",
    "upgrade",
]
