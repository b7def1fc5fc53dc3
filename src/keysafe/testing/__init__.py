"""Test helpers shipped with keysafe for third-party backends.

``BackendConformance`` is the backend contract as a pytest suite: subclass it with one
factory method (see ``keysafe.testing.conformance``). Importing this package needs
pytest; importing ``keysafe`` itself never imports it.
"""

import pytest

# Plain asserts in the shipped suite get pytest's detailed failure messages.
pytest.register_assert_rewrite("keysafe.testing.conformance")

from keysafe.testing.conformance import BackendConformance  # noqa: E402

__all__ = ["BackendConformance"]
