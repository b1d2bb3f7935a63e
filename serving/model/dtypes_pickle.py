"""dtypes.pickle read with an unpickler that can build a Series of dtypes and nothing else.

A pickle names the callables it runs (`find_class`); a hostile dtypes.pickle names
`os.system` or `builtins.eval`. Only the pandas and numpy names a dtypes Series (or a dict
of dtypes) needs are allowed, under their current and older module paths, so pickles
written by earlier pandas and numpy releases still load. Each allowed name builds data; none
of them imports, opens, evaluates or calls back into an arbitrary object.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

_NUMPY_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")

ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "slice"),
        # A timezone-aware datetime dtype: datetime.timezone.utc is built from a timedelta.
        ("datetime", "timezone"),
        ("datetime", "timedelta"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        *((module, "_reconstruct") for module in _NUMPY_CORE),
        *((module, "scalar") for module in _NUMPY_CORE),
        # The Series and its index.
        ("pandas", "Series"),
        ("pandas.core.series", "Series"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas.arrays", "StringArray"),
        ("pandas.core.arrays.string_", "StringArray"),
        # pandas' own dtypes, as top-level names and where they are defined.
        ("pandas", "NA"),
        ("pandas._libs.missing", "NA"),
        ("pandas._libs.missing", "NAType"),
        *(
            (module, name)
            for name in (
                "CategoricalDtype",
                "DatetimeTZDtype",
                "StringDtype",
                "BooleanDtype",
                "Int8Dtype",
                "Int16Dtype",
                "Int32Dtype",
                "Int64Dtype",
                "UInt8Dtype",
                "UInt16Dtype",
                "UInt32Dtype",
                "UInt64Dtype",
                "Float32Dtype",
                "Float64Dtype",
            )
            for module in (
                "pandas",
                "pandas.core.dtypes.dtypes",
                "pandas.core.arrays.string_",
                "pandas.core.arrays.boolean",
                "pandas.core.arrays.integer",
                "pandas.core.arrays.floating",
            )
        ),
    }
)


# pandas 3 keeps text in Arrow arrays when pyarrow is installed (the service installs it to
# read Parquet), so a Series of dtypes written there has an index of column names that
# pickles as an ArrowStringArray, rebuilt from raw Arrow buffers. These names build data
# too: a type from its alias, a buffer from bytes. The array itself is rebuilt by
# `_restore_checked_array`, which validates it in full (offsets within the buffers, valid
# UTF-8) before pandas reads a byte of it.
ARROW_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
        ("pyarrow.lib", "type_for_alias"),
        ("pyarrow.lib", "py_buffer"),
        ("builtins", "bytearray"),
    }
)


def _restore_checked_array(state: Any) -> Any:
    """pyarrow's own rebuilding of a pickled array, then its full validation."""
    from pyarrow.lib import _restore_array

    array = _restore_array(state)
    array.validate(full=True)
    return array


SUBSTITUTES: dict[tuple[str, str], Any] = {
    ("pyarrow.lib", "_restore_array"): _restore_checked_array
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a class or function outside ALLOWED."""

    def __init__(self, module: str, name: str):
        self.qualified = f"{module}.{name}"
        super().__init__(f"it names {self.qualified}, which a dtypes pickle never needs")


class DtypesUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names in ALLOWED."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SUBSTITUTES:
            return SUBSTITUTES[(module, name)]
        if (module, name) not in ALLOWED and (module, name) not in ARROW_ALLOWED:
            raise RefusedGlobal(module, name)
        return super().find_class(module, name)


def loads(data: bytes) -> Any:
    """Unpickle dtypes; RefusedGlobal for any name outside ALLOWED, before it is imported."""
    return DtypesUnpickler(io.BytesIO(data)).load()
