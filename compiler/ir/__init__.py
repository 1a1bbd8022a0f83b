"""Stage 0: the data that flows between the stages (FloatGraph, QGraph, low-rank algebra). numpy only."""
