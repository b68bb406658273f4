"""Command-line tools that use trained models (the top layer: they import the models)."""
