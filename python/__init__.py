"""Host harness: build generated C plus the runtime with cffi, run it, read its op counters."""
