"""DGLM: diffusion-guided language modelling with plug-and-play linear probes (Lovelace et al. 2024)."""
