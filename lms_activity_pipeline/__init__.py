"""LMS activity pipeline: LMS attempts -> classified activity events -> warehouse tables and mentor DMs."""

__version__ = "0.1.0"
