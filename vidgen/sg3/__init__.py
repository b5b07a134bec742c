"""StyleGAN3 image family (Karras et al. 2021, METHODS.md 8): networks (networks.py) and
the conversion of published snapshots (convert.py)."""
