"""pgolf verifier and statistics."""
