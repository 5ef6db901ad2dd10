"""Training: the teacher trainer, checkpoints, and torchrun (DDP) set-up."""
