"""davserver: a WebDAV server with built-in server-side encryption."""

__version__ = "0.1.0"
