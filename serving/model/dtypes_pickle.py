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
# too: a type from its alias, a buffer from bytes. pyarrow's own `_restore_array` trusts its
# input (a wrong number of buffers is read out of bounds in C++, nested children recurse
# without limit): it is never called. `_restore_checked_array` takes its place, accepts
# only a flat text array of three buffers, builds it with `Array.from_buffers` (which checks
# the count and the sizes) and validates it in full (offsets, UTF-8) before pandas reads it.
ARROW_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
        ("pyarrow.lib", "type_for_alias"),
        ("pyarrow.lib", "py_buffer"),
    }
)


def _refuse_array(problem: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(
        f"an Arrow array in it {problem}, which a dtypes pickle never has"
    )


def _restore_checked_array(state: Any) -> Any:
    """A text array from the state pyarrow pickles, checked before anything reads it."""
    import pyarrow as pa

    if not isinstance(state, tuple) or len(state) != 7:
        raise _refuse_array("has an unexpected shape")
    kind, length, null_count, offset, buffers, children, dictionary = state
    if kind not in (pa.string(), pa.large_string()):
        raise _refuse_array(f"holds {kind!r}, not text")
    if children != [] or dictionary is not None:
        raise _refuse_array("has children or a dictionary")
    counts = (length, null_count, offset)
    if any(type(n) is not int for n in counts) or length < 0 or offset < 0 or null_count < -1:
        raise _refuse_array("has a length, offset or null count that is not a count")
    if (
        not isinstance(buffers, list)
        or len(buffers) != 3
        or buffers[1] is None
        or buffers[2] is None
        or not all(b is None or isinstance(b, pa.Buffer) for b in buffers)
    ):
        raise _refuse_array("does not have the three buffers of a text array")
    try:
        array = pa.Array.from_buffers(kind, length, buffers, null_count=null_count, offset=offset)
        array.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise _refuse_array(f"is malformed ({exc})") from exc
    return array


def _bytes_copy(*args: Any) -> bytearray:
    """`bytearray` as a buffer's pickle spells it (from bytes, or from text and 'latin-1'),
    never from a number: `bytearray(10**10)` would allocate 10 GB."""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] == "latin-1":
        return bytearray(args[0], "latin-1")
    raise pickle.UnpicklingError("a buffer in it is not built from bytes")


SUBSTITUTES: dict[tuple[str, str], Any] = {
    ("pyarrow.lib", "_restore_array"): _restore_checked_array,
    ("builtins", "bytearray"): _bytes_copy,
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
