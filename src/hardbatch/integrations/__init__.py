"""Integrations with other training stacks; each imports its framework lazily, so the core never needs it."""
