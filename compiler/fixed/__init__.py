"""Stages 5-7: the fixed-point core (numpy twins of the C helpers, calibration, quantization, the integer
reference and its op counts). numpy only."""
