# Alembic environment of the random projects of tests/it/alembic_graphs.rs: the database
# comes from `-x url=...` (offline, `--sql`, too); every revision runs in its own transaction, as the xtask runs
# them; no pooled connection outlives a command.
from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

url = context.get_x_argument(as_dictionary=True)["url"]
if context.is_offline_mode():
    context.configure(url=url, literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
