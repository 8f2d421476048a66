"""Live grid-intensity providers, one module each, all behind providers.base.Provider.

The provider names are defined here and nowhere else: settings validate against NAMES, help texts list
them, and get_provider maps them to classes. Adding a provider means adding a module and one entry to
_CLASSES (plus its credential variables, if any). This module stays light because settings import it
at start-up: the provider modules (and urllib) load on first use, and nothing touches the network until
a provider's method is called.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from carbonrun.intensity.providers.base import Provider

_CLASSES: Dict[str, Tuple[str, str]] = {
    "uk": ("carbonrun.intensity.providers.uk", "UKCarbonIntensity"),
    "electricitymaps": ("carbonrun.intensity.providers.electricitymaps", "ElectricityMaps"),
    "watttime": ("carbonrun.intensity.providers.watttime", "WattTime"),
}
NAMES: Tuple[str, ...] = tuple(_CLASSES)
OFF = "none"  # a flag or project config turning off a provider set in the user's config
# Credentials come from the environment (or [providers.<name>] in a config file), never from a flag.
CREDENTIAL_ENV: Dict[str, Dict[str, str]] = {
    "electricitymaps": {"token": "CARBONRUN_ELECTRICITYMAPS_TOKEN"},
    "watttime": {"user": "CARBONRUN_WATTTIME_USER", "password": "CARBONRUN_WATTTIME_PASSWORD"},
}


def names_help() -> str:
    return f"{', '.join(NAMES)} ({OFF}: off)"


def configured(name: Optional[str]) -> Optional[str]:
    """The provider a setting asks for, or None when it asks for none (unset, empty, or `none`)."""
    key = (name or "").strip().lower()
    return None if key in ("", OFF) else key


def credentials(name: str, env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The provider's credentials found in the environment, as provider options."""
    env = os.environ if env is None else env
    return {opt: env[var] for opt, var in CREDENTIAL_ENV.get(name, {}).items() if env.get(var)}


def get_provider(name: str, options: Optional[Mapping[str, Any]] = None) -> "Provider":
    """A configured provider; UnknownProvider (a ValueError) when no provider has that name."""
    from carbonrun.intensity.providers.base import Provider, UnknownProvider  # urllib: only with a provider

    key = (name or "").strip().lower()
    if key not in _CLASSES:
        raise UnknownProvider(f"unknown intensity provider {name!r}; choose from {', '.join(NAMES)}")
    module, cls = _CLASSES[key]
    provider = getattr(importlib.import_module(module), cls)(options)
    assert isinstance(provider, Provider)
    return provider
