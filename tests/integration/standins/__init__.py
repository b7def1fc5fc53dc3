"""Loopback stand-ins for cloud secret stores that cannot run here.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service. (One stand-in
per store: GCP Secret Manager v1 and Azure Key Vault secrets, over real loopback
HTTP(S).)
Each implements only what keysafe's backends use, with the documented shapes, limits
and error statuses, plus fault injection for outage and throttling tests.
"""

from standins._http import Fault, LoopbackServer
from standins.azure_standin import AzureKeyVaultStandin, FakeTokenCredential
from standins.gcp_standin import GcpSecretManagerStandin

__all__ = [
    "AzureKeyVaultStandin",
    "FakeTokenCredential",
    "Fault",
    "GcpSecretManagerStandin",
    "LoopbackServer",
]
