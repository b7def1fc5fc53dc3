from __future__ import annotations

from django.db import models

from keysafe.integrations.django.mixins import KeysafeCredentialsMixin, KeysafeSecretsMixin


class Organisation(models.Model):
    slug = models.CharField(max_length=80)

    class Meta:
        app_label = "ksapp"


class OrganisationSettings(KeysafeSecretsMixin, models.Model):
    """Spec 000's OrganisationSettings: /ragstar/{env}/org-{id}/llm/openai-api-key."""

    organisation = models.OneToOneField(Organisation, on_delete=models.CASCADE)
    keysafe_org = "{organisation_id}"
    keysafe_domain = "llm"
    keysafe_secrets = ("openai-api-key", "anthropic-api-key", "webhook-token")
    keysafe_kebab_names = True
    keysafe_delete_with_row = True

    class Meta:
        app_label = "ksapp"


class OrganisationIntegration(KeysafeCredentialsMixin, models.Model):
    """Spec 000's OrganisationIntegration: JSON credentials per integration."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE)
    integration_key = models.CharField(max_length=80)
    keysafe_org = "{organisation_id}"
    keysafe_domain = "{integration_key}"
    keysafe_credentials_name = "credentials"
    keysafe_credential_fields = ("bot_token", "signing_secret", "app_token")
    keysafe_delete_with_row = True

    def __str__(self) -> str:
        return f"{self.integration_key} of {self.organisation_id}"

    class Meta:
        app_label = "ksapp"


class Team(KeysafeSecretsMixin, models.Model):
    """Named by a free-text column: what a bad slug must not do to the path."""

    slug = models.CharField(max_length=80, null=True)
    keysafe_org = "{slug}"

    class Meta:
        app_label = "ksapp"


class Webhook(KeysafeCredentialsMixin, models.Model):
    """The defaults: only the org is named (credentials at webhook-<pk> in the
    integrations domain)."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE)
    keysafe_org = "{organisation_id}"
    keysafe_delete_with_row = True

    class Meta:
        app_label = "ksapp"


class Unnamed(KeysafeSecretsMixin, models.Model):
    """No keysafe_org: its rows cannot hold secrets."""

    keysafe_delete_with_row = True

    class Meta:
        app_label = "ksapp"
