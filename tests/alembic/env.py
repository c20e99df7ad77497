# Alembic environment for the interop test: the database comes from ALEMBIC_URL, and
# every revision runs in its own transaction, as the xtask runs them.
import os

from alembic import context
from sqlalchemy import create_engine

engine = create_engine(os.environ["ALEMBIC_URL"])
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
