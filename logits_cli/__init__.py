"""logits: a command-line checkpoint manager for services that speak the Tinker HTTP API."""

__version__ = "0.1.0"
