"""The training loop and what it is made of: the jitted step, losses, stage inputs and targets,
writers."""
