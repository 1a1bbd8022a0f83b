"""Stages 9-10: boards, cross builds, qemu runs, budgets and plans for a target device."""
