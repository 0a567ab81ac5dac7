"""Plans, usage limits and Stripe billing: the SaaS around the pipelines."""
