"""Data-subject requests (GDPR, CCPA/CPRA, PIPL): ``v.dsar``.

- :mod:`vault.dsar.clocks`: the statutory clocks, pure functions of a regime's
  clock profile, the instant a request was received and a holiday calendar;
- :mod:`vault.dsar.model`: states, moves, the frozen :class:`DSARRequest`;
- :mod:`vault.dsar.service`: :class:`DSARService`, every move authorised,
  recorded in the append-only history and audited;
- :mod:`vault.dsar.identity`: matching and verifying requesters through keyed
  digests, without decrypting;
- :mod:`vault.dsar.fulfil`: access/portability exports, erasure, rectification,
  restriction, objections and opt-outs, explanations, through the services below;
- :mod:`vault.dsar.bundle`: signed export bundles and erasure certificates;
- :mod:`vault.dsar.report`: on-time figures and the request log.
"""

from __future__ import annotations

from vault.dsar import clocks, model
from vault.dsar.bundle import verify_bundle, verify_document
from vault.dsar.clocks import *  # noqa: F403  (its __all__ is ours)
from vault.dsar.fulfil import FulfilServices, Recipient
from vault.dsar.model import *  # noqa: F403  (its __all__ is ours)
from vault.dsar.report import DSARReport, GroupFigures
from vault.dsar.service import CHANNELS, DSARService

# The clocks and the model are exported whole, as their own __all__ says (the
# way asyncio builds its package); the rest name by name.
__all__ = ["CHANNELS", "DSARReport", "DSARService", "FulfilServices", "GroupFigures",
           "Recipient", "verify_bundle", "verify_document"]
__all__ += clocks.__all__
__all__ += model.__all__
__all__.sort()
