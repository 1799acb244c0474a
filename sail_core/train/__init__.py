"""Training: one loop for every stage (stages are config data)."""
