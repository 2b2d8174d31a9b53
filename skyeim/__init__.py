"""SkyeIM: a real-time messaging gateway and its backend services."""

__version__ = "0.2.0"
