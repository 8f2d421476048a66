"""Live grid-intensity providers, one module each, all behind providers.base.Provider.

Adding a provider means adding a module and one line to _REGISTRY. Modules load on first use, and
nothing here touches the network until a provider's method is called.
"""
from __future__ import annotations

import importlib
from typing import Any, List, Mapping, Optional

from carbonrun.intensity.providers.base import Provider, ProviderError, Reading, Segment, UnknownProvider

__all__ = ["Provider", "ProviderError", "Reading", "Segment", "UnknownProvider", "get_provider", "provider_names"]

_REGISTRY = {
    "uk": ("carbonrun.intensity.providers.uk", "UKCarbonIntensity"),
    "electricitymaps": ("carbonrun.intensity.providers.electricitymaps", "ElectricityMaps"),
    "watttime": ("carbonrun.intensity.providers.watttime", "WattTime"),
}
_ALIASES = {
    "carbonintensity": "uk", "carbon-intensity": "uk", "national-grid": "uk", "gb": "uk",
    "electricity-maps": "electricitymaps", "electricitymap": "electricitymaps", "em": "electricitymaps",
    "wt": "watttime",
}


def provider_names() -> List[str]:
    """The canonical provider names (for --provider choices and help)."""
    return list(_REGISTRY)


def get_provider(name: str, options: Optional[Mapping[str, Any]] = None) -> Provider:
    """A configured provider; UnknownProvider (a ValueError) when no provider has that name."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnknownProvider(f"unknown intensity provider {name!r}; choose from {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[key]
    return getattr(importlib.import_module(module), cls)(options)
