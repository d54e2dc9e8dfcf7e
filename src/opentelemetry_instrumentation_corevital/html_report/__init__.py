"""Self-contained HTML reports of CoreVital runs (inline SVG, CSS and script; no network)."""

from .page import build_page

__all__ = ["build_page"]
