"""Authentication: local users (passlib hashes), LDAP (ldap3), throttling, HTTP Basic."""
