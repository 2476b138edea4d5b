"""Model package: the feature schema (the contract), synthetic events, training, and versioned bundles."""
