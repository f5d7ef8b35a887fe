"""Command line: occ-style ``davserver NAMESPACE:VERB`` commands, one module per namespace."""
