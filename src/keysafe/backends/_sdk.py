"""Lazy imports of optional SDKs, with the extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from keysafe.errors import ConfigError


def require_sdk(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ConfigError saying ``pip install 'keysafe[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"this backend needs {module.split('.')[0]}, which is not installed; "
            f"install it with: pip install 'keysafe[{extra}]'") from None
