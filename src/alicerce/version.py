"""The package version, in its own module so any module can record it without importing
the package (and so the whole core) first."""

__version__ = "0.1.0"
