"""Reading the configuration file's mappings: every value with the dotted key it came from.

Shared by ``config`` (the file's schema) and the modules that parse one part of an app's
section (``app_mounts``, ``app_docker``), so every error names its key the same way.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

ABS_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE_RE = re.compile(r"^(\d+)\s*([kmg]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class Section:
    """A mapping read with its dotted path, so every error can name the key."""

    def __init__(self, data: Any, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or "(top level)", "must be a mapping")
        self.data = dict(data)
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str, default: Any = ..., *, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if required or default is ...:
                raise ConfigError(self.key(name), "is required")
            return default
        return self.data[name]

    def text(
        self, name: str, default: Any = ..., pattern: re.Pattern[str] | None = None, hint: str = ""
    ) -> Any:
        value = self.raw(name, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"must be a string, got {type(value).__name__}")
        if pattern is not None and not pattern.match(value):
            raise ConfigError(
                self.key(name), f"invalid value {value!r}{': ' + hint if hint else ''}"
            )
        return value

    def integer(self, name: str, default: Any = ..., low: int = 0, high: int = 2**31) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be between {low} and {high}, got {value}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"must be true or false, got {value!r}")
        return value

    def duration(self, name: str, default: Any = ..., *, zero: bool = False) -> float:
        value = self.raw(name, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION_RE.match(value.strip())):
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        else:
            raise ConfigError(
                self.key(name), f"must be a duration like 30s, 15m, 2h, 1d; got {value!r}"
            )
        if seconds < 0 or (seconds == 0 and not zero):
            raise ConfigError(
                self.key(name), "must not be negative" if zero else "must be positive"
            )
        return seconds

    def str_list(self, name: str, pattern: re.Pattern[str] | None = None) -> list[str]:
        value = self.raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), "must be a list of strings")
        for index, item in enumerate(value):
            if pattern is not None and not pattern.match(item):
                raise ConfigError(f"{self.key(name)}[{index}]", f"invalid value {item!r}")
        return list(value)

    def abs_path(self, name: str, default: Any = ...) -> Any:
        value = self.raw(name, default)
        if value is None or (value is default and default is not ...):
            return value
        return plain_abs_path(value, self.key(name))

    def sections(self, name: str) -> list[Section]:
        """A list of mappings, each read as a section of its own (``name[0]``, ``name[1]``...)."""
        value = self.raw(name, [])
        if not isinstance(value, list):
            raise ConfigError(self.key(name), "must be a list of mappings")
        return [Section(item, f"{self.key(name)}[{index}]") for index, item in enumerate(value)]

    def section(self, name: str) -> Section:
        return Section(self.raw(name, {}), self.key(name))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")


def parse_size(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value.strip())):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
        if size > 0:
            return size
    raise ConfigError(key, f"must be a size like 512m or 2g, got {value!r}")


def plain_abs_path(value: Any, key: str) -> str:
    """An absolute path in plain characters, written without '.', '..', '//' or a trailing
    '/' (so comparing paths as strings means what it seems), and never '/' itself."""
    if not isinstance(value, str) or not ABS_PATH_RE.match(value):
        raise ConfigError(key, f"must be an absolute path, got {value!r}")
    if posixpath.normpath(value) != value or value.startswith("//") or value == "/":
        raise ConfigError(
            key, f"must be a plain absolute path below /, like /srv/data; got {value!r}"
        )
    return value
