"""Child processors that misbehave on purpose or leave evidence; run as ``python -m``."""
