"""The ``fedpact`` command line: the top layer, built on the SDK."""
