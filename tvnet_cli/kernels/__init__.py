"""Machine plumbing for the TV-L1 solver: the hand-written kernels and their selection."""
