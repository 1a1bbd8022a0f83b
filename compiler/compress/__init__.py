"""Stage 4: compression of recurrent weights (truncated SVD, rank policies, perturbation model). numpy only."""
