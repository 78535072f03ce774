"""The inference service (`/generate`, `/health`, `/warmup`) over an engine, and the client workers use."""
