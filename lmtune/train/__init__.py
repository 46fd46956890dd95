"""Training: Trainer arguments, collation, checkpoints and resume, launch, memory."""
