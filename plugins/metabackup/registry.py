"""A registry of plug-ins by name, each imported on first use (so parsing a DAG file loads only the
plug-ins its spec names, and never a kind's client library it does not use)."""

from __future__ import annotations

import importlib
from typing import Any


class Registry:
    """``name -> "module:attribute"``; :meth:`get` imports the module and returns the attribute."""

    def __init__(self, what: str, entries: dict[str, str]):
        self.what = what
        self.entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def get(self, name: str) -> Any:
        try:
            module, attribute = self.entries[name].split(":")
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r} (available: {', '.join(self.names())})") from None
        return getattr(importlib.import_module(module), attribute)
