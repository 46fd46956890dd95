"""Sources, text, chunking."""
