"""The ``persaes`` command line (click)."""
