"""Loopback stand-ins for cloud secret stores that cannot run here.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service. (One stand-in
per service: GCP Secret Manager v1, GCP Cloud KMS v1, and Azure Key Vault secrets and
keys, over real loopback HTTP(S).)
Each implements only what keysafe's backends use, with the documented shapes, limits
and error statuses, plus fault injection for outage and throttling tests.
"""

from standins._http import Fault, LoopbackServer
from standins.azure_keys_standin import AzureKeyVaultKeysStandin
from standins.azure_standin import AzureKeyVaultStandin, FakeTokenCredential
from standins.gcp_standin import GcpSecretManagerStandin
from standins.gcpkms_standin import GcpKmsStandin

__all__ = [
    "AzureKeyVaultKeysStandin",
    "AzureKeyVaultStandin",
    "FakeTokenCredential",
    "Fault",
    "GcpKmsStandin",
    "GcpSecretManagerStandin",
    "LoopbackServer",
]
