"""The package's version: a leaf, so every layer can name it without importing the training code."""

__version__ = "0.2.0"
