"""Files: images, atomic writes, weights and profile files, rated references, preference answers."""
