"""The service layer: every entry point (WebDAV, web pages, CLI) reads and writes files
and keys through these modules, never through meta or storage directly."""
