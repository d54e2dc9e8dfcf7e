"""What happened inside the model: the only code that touches torch during generation."""
