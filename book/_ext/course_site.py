"""Sphinx glue for the course's website (book/_config.yml loads it as a local extension)."""

from __future__ import annotations


def lab_anchor(title: str) -> str:
    """The anchor JupyterLab gives a heading: its text with spaces turned into hyphens.

    The course links into notebook sections the way JupyterLab resolves them
    (`05_dualpipe.ipynb#4.-Table-2,-row-3`); using the same anchors on the site keeps one form of link that
    works in both places.
    """
    return title.strip().replace(" ", "-")


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
