"""Plain ``nn.Module`` networks: no losses, no optimisers, no logging."""
