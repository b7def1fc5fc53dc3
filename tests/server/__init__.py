"""Server tests: the HTTP API, roles and tenancy, audit, fuzzing, resilience."""
