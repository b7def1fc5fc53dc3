"""``manage.py test_secrets [--cleanup]``: spec 000's self-test of the configured store
(the same steps and exit codes as ``keysafe test-secrets``), with random values never
shown."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = ("Self-test the configured keysafe store: put, has, get, versions, JSON "
            "credentials, delete and restore, with random values that are never shown.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--cleanup", action="store_true",
                            help="Purge every self-test secret afterwards (also earlier "
                                 "runs').")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the result as JSON.")

    def handle(self, *args: Any, cleanup: bool = False, as_json: bool = False,
               **options: Any) -> None:
        from keysafe import maintenance
        from keysafe.cli import exitcodes
        from keysafe.errors import KeysafeError
        from keysafe.integrations.django import acting_as, secret_manager

        try:
            with acting_as("django:manage.py test_secrets"):
                result = maintenance.self_test(secret_manager(), cleanup=cleanup)
        except KeysafeError as exc:
            raise CommandError(f"keysafe: {exc.message}",
                               returncode=exitcodes.exit_code_for(exc)) from None
        if as_json:
            self.stdout.write(json.dumps(result.to_dict()))
        else:
            from keysafe.cli.output import self_test_table

            self_test_table(result, file=self.stdout)
        failure = result.first_failure
        if failure is not None:
            raise CommandError(f"self-test failed at step {failure.name!r}: "
                               f"{failure.detail}", returncode=exitcodes.BY_ERROR_CODE.get(
                                   failure.error_code or "", exitcodes.UNEXPECTED))
        if not as_json:
            self.stdout.write("self-test passed" + (
                "; its secrets were purged" if cleanup else
                f"; its secrets remain in org {result.org} (--cleanup removes them)"))
