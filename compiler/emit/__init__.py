"""Stage 8: C source emission for a QGraph (formatting only, no arithmetic decisions)."""
