"""Host harness: build generated C plus the runtime with cffi, run it, read its op counters."""

from stapes.host.harness import (
    Helpers,
    assert_bit_exact,
    build,
    build_runtime,
    cache_dir,
    first_mismatch,
    run_c,
    run_runtime,
    run_runtime_sanitized,
    run_sanitized,
    runtime_include_dir,
    runtime_sources,
)

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
