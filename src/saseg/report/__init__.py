"""Static HTML report of a run (``saseg report RUN_DIR``): opens from disk, needs no network."""

from .html import write_report

__all__ = ["write_report"]
