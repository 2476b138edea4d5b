"""AWS adapters, one module per service; the only place in consumers/ that talks to botocore."""
