from __future__ import annotations

from django.contrib import admin

from keysafe.integrations.django.admin import KeysafeSecretsAdmin
from ksapp.models import OrganisationIntegration, OrganisationSettings, Team

admin.site.register(OrganisationSettings, KeysafeSecretsAdmin)
admin.site.register(OrganisationIntegration, KeysafeSecretsAdmin)
admin.site.register(Team, KeysafeSecretsAdmin)
