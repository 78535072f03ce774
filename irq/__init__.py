"""irq: an asynchronous job system for schema-constrained IR generation."""
