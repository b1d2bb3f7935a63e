"""pipeline.skops: a pipeline loaded without running arbitrary code (skops.io).

skops builds only types it trusts (scikit-learn estimators, NumPy arrays, builtins) and
reports the rest (`skops.io.get_untrusted_types`): a custom transformer, even `numpy.dtype`.
The folder's model.json must list each of those under `skops_trusted` for the folder to
load; nothing is trusted implicitly. A listed type must come from scikit-learn, NumPy, SciPy
or the custom_transformers package, so no model.json can trust `os.system` or `builtins.eval`;
and with the folder's digests pinned outside it (MODEL_DIGESTS), model.json cannot be edited
to widen the list either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TRUSTED_KEY = "skops_trusted"
TRUSTABLE_PACKAGES = ("sklearn", "numpy", "scipy", "custom_transformers")


class SkopsRefused(Exception):
    """A skops file holding types model.json does not trust; the message is the reason, and
    `types` the types that can never be trusted, when they are known."""

    def __init__(self, message: str, types: list[str] | None = None):
        super().__init__(message)
        self.types = types or []


def untrustable(types: list[str]) -> list[str]:
    """The types no model.json may trust: those from outside TRUSTABLE_PACKAGES."""
    return [t for t in types if t.split(".", 1)[0] not in TRUSTABLE_PACKAGES]


def trusted_types(metadata: Mapping[str, Any]) -> list[str]:
    """The types model.json trusts, checked to come from a package allowed to be trusted."""
    listed = metadata.get(TRUSTED_KEY, [])
    if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
        raise SkopsRefused(f"model.json {TRUSTED_KEY} must be a list of type names")
    outside = untrustable(listed)
    if outside:
        raise SkopsRefused(
            f"model.json {TRUSTED_KEY} lists {outside}; only types from "
            f"{', '.join(TRUSTABLE_PACKAGES)} can be trusted"
        )
    return listed


def loads(data: bytes, metadata: Mapping[str, Any]) -> Any:
    """Load a skops file's bytes, trusting what skops trusts plus model.json's list only."""
    import skops.io  # only folders holding a pipeline.skops need it

    trusted = trusted_types(metadata)
    untrusted = skops.io.get_untrusted_types(data=data)
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise SkopsRefused(
            f"it holds types skops does not trust and model.json {TRUSTED_KEY} does not list: "
            f"{refused}"
        )
    return skops.io.loads(data, trusted=sorted(set(untrusted)))


def dumps(pipeline: Any) -> tuple[bytes, list[str]]:
    """Save a pipeline in the skops format and return its bytes with the types skops will not
    build unless model.json trusts them, checked as `trusted_types` checks that list: a type
    from outside TRUSTABLE_PACKAGES raises SkopsRefused, since no folder could load it."""
    import skops.io

    data = skops.io.dumps(pipeline)
    untrusted = sorted(set(skops.io.get_untrusted_types(data=data)))
    outside = untrustable(untrusted)
    if outside:
        raise SkopsRefused(
            f"the pipeline holds types {outside}, which a skops folder can never trust (only "
            f"types from {', '.join(TRUSTABLE_PACKAGES)}); move custom code into the "
            "custom_transformers package, or save it as a pickle",
            outside,
        )
    return data, untrusted
