"""LightningModules: each holds one study's objective, metrics and logging."""
