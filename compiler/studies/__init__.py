"""Workflows that combine stages: rank sweeps (with optional fine-tuning), compression reports, the demo."""
