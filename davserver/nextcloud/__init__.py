"""Reading Nextcloud/ownCloud server-side encryption (OC_DEFAULT_MODULE) without PHP.

Modules, bottom up: ``phpconfig`` (config.php), ``keyfiles`` (key files and their
instance-secret wrapping), ``privatekeys`` (password-protected key pairs), ``filekeys``
(share keys -> file key), ``content`` (the block format), ``layout`` (where things are in a
data directory) and ``importer`` (the service the CLI calls).
"""
