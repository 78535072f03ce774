"""The REST API: submit, poll, list and cancel jobs."""
