"""Conditioning inputs for the diffusion models: covariates (brain) and report / prompt text."""
