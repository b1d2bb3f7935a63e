"""Which models this process serves, by endpoint and version."""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.config import Settings
from serving.errors import NotFound
from serving.runtime import LoadedModel


@dataclass
class Registry:
    """Loaded models keyed by endpoint then version; loaded once at start, read-only after."""

    default_endpoint: str
    models: dict[str, dict[str, LoadedModel]] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        """Load the root model as the default endpoint."""
        registry = cls(settings.default_endpoint)
        registry.add(
            LoadedModel.load(
                settings.root_model_dir,
                settings.default_endpoint,
                compile=settings.compile_models,
            )
        )
        return registry

    def add(self, model: LoadedModel) -> None:
        """Serve one more model version."""
        self.models.setdefault(model.endpoint, {})[model.version] = model

    def get(self, endpoint: str, version: str | None = None) -> LoadedModel:
        """The model answering for an endpoint: the given version, or its newest one."""
        versions = self.models.get(endpoint)
        if not versions:
            raise NotFound(f"There is no endpoint named {endpoint!r}.")
        if version is None:
            return versions[max(versions, key=_version_order)]
        if version not in versions:
            raise NotFound(f"Endpoint {endpoint!r} has no version {version!r}.")
        return versions[version]

    def find(self, endpoint: str, version: str) -> LoadedModel | None:
        """A loaded version, or None when this process does not serve it."""
        return self.models.get(endpoint, {}).get(version)

    def __len__(self) -> int:
        return sum(len(v) for v in self.models.values())


def _version_order(version: str) -> tuple[int, int | str]:
    # "10" sorts after "9"; non-numeric versions sort after numeric ones, by text.
    return (0, int(version)) if version.isdigit() else (1, version)
