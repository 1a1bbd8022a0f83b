"""C text formatting shared by every generator of C (the model emitter, the board drivers)."""

from __future__ import annotations

import numpy as np

PER_LINE = 8
_CTYPES = {
    np.dtype(np.int8): "int8_t",
    np.dtype(np.int16): "int16_t",
    np.dtype(np.int32): "int32_t",
    np.dtype(np.uint8): "uint8_t",
    np.dtype(np.uint16): "uint16_t",
}


def c_type(dtype) -> str:
    """The <stdint.h> name of an integer numpy dtype."""
    return _CTYPES[np.dtype(dtype)]


def c_array(ctype: str, name: str, values, comment: str | None = None, per_line: int = PER_LINE) -> str:
    """``static const <ctype> name[n] = { ... };`` with `per_line` right-aligned values a line
    (an empty array gets one 0, since C has no zero-length arrays)."""
    flat = [int(v) for v in np.asarray(values).reshape(-1)] or [0]
    width = max(len(str(v)) for v in flat) + 1
    rows = [" ".join(f"{v:>{width}d}," for v in flat[k : k + per_line]) for k in range(0, len(flat), per_line)]
    rows[-1] = rows[-1].rstrip(",")
    head = [f"/* {comment} */"] if comment else []
    return "\n".join(head + [f"static const {ctype} {name}[{len(flat)}] = {{"] + ["    " + r for r in rows] + ["};"])
