"""Audio tasks for hearing-aid-class devices, generated offline (see docs/audio-tasks.md)."""
