"""SQL store: the source of truth for jobs and API keys."""
