"""fastopt's version: defined here only. pyproject.toml reads it (setuptools dynamic version, parsed
without importing the package) and fastopt/__init__.py re-exports it as fastopt.__version__."""
__version__ = "0.1.0"
