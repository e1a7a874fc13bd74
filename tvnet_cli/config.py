"""What every frozen config dataclass shares: to/from plain dicts (for files) and replace."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .errors import TVNetError


class ConfigMixin:
    """Mix into a `@dataclass(frozen=True)` config; `label` names it in error messages."""

    label: ClassVar[str] = "config"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a stored dict; unknown keys are an error, not silently dropped."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TVNetError(f"{cls.label}: unknown fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
