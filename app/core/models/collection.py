"""An ordered, immutable set of model specs, built by the composition root and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from app.core.models.spec import ModelSpec
from app.core.series_info import Route, SeriesInfo


@dataclass(frozen=True)
class ModelSpecs:
    """Order matters: routing asks each spec in turn, and lists (self-test, settings) follow it."""

    specs: tuple[ModelSpec, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two model specs are named {', '.join(duplicates)}")

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def get(self, name: str | None) -> ModelSpec | None:
        return next((s for s in self.specs if s.name == name), None)

    def __getitem__(self, name: str) -> ModelSpec:
        spec = self.get(name)
        if spec is None:
            raise KeyError(name)
        return spec

    def with_spec(self, spec: ModelSpec) -> "ModelSpecs":
        """A new collection with one more model (the existing ones keep their routing precedence)."""
        return ModelSpecs((*self.specs, spec))

    def route(self, info: SeriesInfo) -> Route | None:
        """The first spec that claims the series decides (takes it, or refuses it with a reason)."""
        for spec in self.specs:
            decision = spec.route(info)
            if decision is not None:
                return decision
        return None
