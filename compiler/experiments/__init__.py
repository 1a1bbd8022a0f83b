"""`stapes paper`: the experiment suite of Cox (arXiv 1612.00891), reproducible in one command."""
