"""The commands of `minivlm COMMAND`, one module each (clip: train-clip, vision: train-vision,
lm: train-lm, zero_shot: zero-shot, info), and common.py: what they share (the run directory,
the update step, the training loop, seeded streams, command-line errors). A command composes the
library; it adds nothing the library should own."""
