"""The data path (a service): records written, read, found, changed and deleted.

:class:`RecordService` is reached through the facade's data methods
(``Vault.put`` ... ``Vault.delete``); :mod:`.sealing` encrypts, indexes and
opens records, :mod:`.gate` asks the consent layer about every subject a call
touches.
"""

from vault.records.service import RecordService

__all__ = ["RecordService"]
