"""The manager facade (sync and async), its cache and its audit log."""
