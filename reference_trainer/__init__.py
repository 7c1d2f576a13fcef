"""pgolf reference trainer (train_gpt.py is self-contained and imports nothing from here)."""
