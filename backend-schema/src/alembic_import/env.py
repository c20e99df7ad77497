# The env.py `cargo xtask migrate import-alembic` runs Alembic with, instead of the
# project's own (which usually imports the application and its settings).
#
# Offline (`--sql`), with `-x render=FILE -x output=JSON`: loads one revision file and runs
# its upgrade() and downgrade() through Alembic's offline context, writing the SQL and
# what was seen while rendering (autocommit blocks, op.get_bind(), offline-mode checks,
# exceptions) to JSON. No revision graph is involved, so one file renders on its own.
#
# Online, with `-x url=URL`: a plain migration run for the import's proof.
import io
import json
import os
import sys
import traceback
from contextlib import contextmanager

from alembic import context
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.util import load_python_file

arguments = context.get_x_argument(as_dictionary=True)


class Watch:
    """What a revision did while it was rendered that offline SQL cannot hold."""

    def __init__(self, path):
        self.path = path
        self.autocommit = False
        self.get_bind = []
        self.offline_checks = []

    def line(self):
        """The line of the revision file that is running now, if any."""
        for frame in reversed(traceback.extract_stack()):
            if os.path.abspath(frame.filename) == self.path:
                return frame.lineno
        return None


watch = None

_get_bind = Operations.get_bind


def get_bind(self):
    if watch is not None:
        watch.get_bind.append(watch.line())
    return _get_bind(self)


Operations.get_bind = get_bind


# Offline, Alembic's own autocommit_block() writes COMMIT and BEGIN around the block; the
# import records the block instead (the migration becomes non-transactional) and keeps
# the output free of transaction control.
_autocommit_block = MigrationContext.autocommit_block


@contextmanager
def autocommit_block(self):
    if watch is None or not self.as_sql:
        with _autocommit_block(self):
            yield
        return
    watch.autocommit = True
    yield


MigrationContext.autocommit_block = autocommit_block

_is_offline_mode = EnvironmentContext.is_offline_mode


def is_offline_mode(self):
    if watch is not None:
        watch.offline_checks.append(watch.line())
    return _is_offline_mode(self)


EnvironmentContext.is_offline_mode = is_offline_mode


def names(value):
    """None, a string or a sequence of strings, as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def describe(error, path):
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if os.path.abspath(frame.filename) == path
    ]
    return {"message": text, "line": lines[-1] if lines else None}


def run(module, direction, path):
    global watch
    function = getattr(module, direction, None)
    if not callable(function):
        return {"missing": True}
    buffer = io.StringIO()
    context.configure(
        dialect_name="postgresql",
        output_buffer=buffer,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    watch = Watch(path)
    error = None
    try:
        with Operations.context(context.get_context()):
            function()
    except BaseException as caught:  # SystemExit from a revision is a failure too
        error = describe(caught, path)
    seen, watch = watch, None
    return {
        "missing": False,
        "sql": buffer.getvalue(),
        "autocommit": seen.autocommit,
        "get_bind_lines": seen.get_bind,
        "offline_check_lines": seen.offline_checks,
        "error": error,
    }


def render(path, output):
    path = os.path.abspath(path)
    result = {"load_error": None}
    try:
        module = load_python_file(os.path.dirname(path), os.path.basename(path))
    except BaseException as caught:
        result["load_error"] = describe(caught, path)
    else:
        result.update(
            has_revision=hasattr(module, "revision"),
            revision=str(getattr(module, "revision", "") or ""),
            down_revision=names(getattr(module, "down_revision", None)),
            branch_labels=names(getattr(module, "branch_labels", None)),
            depends_on=names(getattr(module, "depends_on", None)),
            doc=module.__doc__ or "",
            upgrade=run(module, "upgrade", path),
            downgrade=run(module, "downgrade", path),
        )
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f)


def driver_url(url):
    for module, scheme in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg")):
        try:
            __import__(module)
        except ImportError:
            continue
        return scheme + url[len("postgresql") :]
    sys.exit(
        "the python running Alembic has no PostgreSQL driver: install psycopg2-binary "
        "(or psycopg) beside alembic"
    )


def migrate(url):
    from sqlalchemy import create_engine, pool

    engine = create_engine(driver_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    render(arguments["render"], arguments["output"])
else:
    migrate(arguments["url"])
