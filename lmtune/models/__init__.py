"""Loading base models (hub, folder, bundled), GPT-2's BPE."""
