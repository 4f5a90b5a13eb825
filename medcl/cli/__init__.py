"""The ``medcl`` command line."""
