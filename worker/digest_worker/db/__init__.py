"""The worker's database: schema (`tables`), migrations (Alembic) and the stores the worker uses."""
