"""The Alembic migrations of the store, installed with irq: `irq db upgrade` finds them wherever irq runs."""
