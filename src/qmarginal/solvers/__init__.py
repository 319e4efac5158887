"""Reconstruction methods, one module each, called through :func:`qmarginal.reconstruct`."""
