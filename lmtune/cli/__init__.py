"""Entry points: what people type (python -m lmtune.cli.NAME); they call the library below."""
