"""aimmat: AI-driven materials-discovery campaigns as declared state."""

__version__ = "0.1.0"
