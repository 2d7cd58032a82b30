"""The applications built on the core: the preference page, folder retouching, reports, variants."""
