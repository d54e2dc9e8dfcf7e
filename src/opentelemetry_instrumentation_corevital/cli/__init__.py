"""The `corevital` command line: run a model under CoreVital, inspect and compare runs locally."""

from .main import main

__all__ = ["main"]
