"""Which version answers: statuses, routing, A/B tests, shadows and API keys."""
