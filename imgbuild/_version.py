"""The package version: imported by anyone, imports nothing."""
__version__ = "0.1.0"
