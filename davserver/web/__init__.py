"""Server-rendered settings pages (Jinja2)."""
