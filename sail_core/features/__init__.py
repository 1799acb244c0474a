"""Features: data-folder rows -> model inputs, and the frozen-encoder feature cache (needs the frozen towers)."""
