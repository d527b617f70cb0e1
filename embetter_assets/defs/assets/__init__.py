"""The pipeline's assets, one module per stage of the chain."""
