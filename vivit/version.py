"""vivit's version, in its own module so that any module can record it without importing the package."""

__version__ = "0.2.0.dev0"
