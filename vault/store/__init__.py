"""Storage: SQLAlchemy models, engines, migrations, retries and bulk inserts."""
