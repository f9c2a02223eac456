"""Keys, envelope encryption, blind indexes, pseudonyms and masking.

Everything here is built on primitives from ``cryptography``; nothing in this
package implements a cipher, a MAC or a KDF of its own.
"""

from vault.crypto.blind_index import BlindIndexer
from vault.crypto.envelope import AESGCMFieldCipher, FieldContext
from vault.crypto.keys import KeyProvider, LocalKeyProvider
from vault.crypto.keystore import DataKey, KeyStore
from vault.crypto.masking import MaskStyle, mask
from vault.crypto.pseudonym import Pseudonymizer

__all__ = [
    "AESGCMFieldCipher",
    "BlindIndexer",
    "DataKey",
    "FieldContext",
    "KeyProvider",
    "KeyStore",
    "LocalKeyProvider",
    "MaskStyle",
    "Pseudonymizer",
    "mask",
]
