"""WebDAV adapter: WsgiDAV provider, resources, middleware; a thin caller of the vault."""
