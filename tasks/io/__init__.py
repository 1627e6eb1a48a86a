"""Files and output: atomic writes, progress bars."""
