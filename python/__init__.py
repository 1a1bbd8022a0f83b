"""Host harness: build generated C plus the runtime with cffi, run it, read its op counters.

* :mod:`stapes.host.cbuild`: flags, the compiler, the runtime's build arguments, cached cffi modules
  (``build``, ``build_runtime``);
* :mod:`stapes.host.run`: ``run_c`` (a generated model), ``run_runtime`` (the runtime, the model
  filled in at run time);
* :mod:`stapes.host.sanitize`: the same under ASan + UBSan, in a subprocess;
* :mod:`stapes.host.helpers`: ``Helpers``, the C twins of stapes.fixed.fixedpoint;
* ``first_mismatch`` / ``assert_bit_exact`` come from :mod:`stapes.fixed.compare`.

The C programs of the harness are files in ``c/`` (package data).
"""

from stapes.fixed.compare import assert_bit_exact, first_mismatch
from stapes.host.cbuild import build, build_runtime, cache_dir, runtime_include_dir, runtime_sources
from stapes.host.helpers import Helpers
from stapes.host.run import run_c, run_runtime
from stapes.host.sanitize import run_runtime_sanitized, run_sanitized

__all__ = [
    "Helpers",
    "assert_bit_exact",
    "build",
    "build_runtime",
    "cache_dir",
    "first_mismatch",
    "run_c",
    "run_runtime",
    "run_runtime_sanitized",
    "run_sanitized",
    "runtime_include_dir",
    "runtime_sources",
]
