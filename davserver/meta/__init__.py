"""Metadata database: users, file index, properties, locks, settings."""
