"""The keysafe HTTP service: blind-write API, identities and roles, web panel."""
