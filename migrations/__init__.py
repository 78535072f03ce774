"""The Alembic migrations of irq's store, installed with irq so that `irq db upgrade` finds them wherever irq runs."""
