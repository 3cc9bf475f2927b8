"""Easel: a self-hosted AI image and animation generation API platform."""

__version__ = "0.1.0"
