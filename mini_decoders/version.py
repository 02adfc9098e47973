"""The package's version (as in pyproject.toml): written into RUN folders, predictions and tables."""

__version__ = "0.1.0"
