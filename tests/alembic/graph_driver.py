# The env.py of a do-nothing Alembic project whose `alembic current` turns into a loop:
# each stdin line is a JSON list of Alembic command-line arguments, run in this process as
# alembic.config.main runs them (so every command pays Python's start-up once, not once per step);
# each answer is one JSON line {"ok": bool, "output": text}. For tests/it/alembic_graphs.rs.
import contextlib
import io
import json
import sys
import traceback
import warnings

from alembic.config import CommandLine, Config

answers = sys.stdout
for line in sys.stdin:
    argv = json.loads(line)
    captured = io.StringIO()
    ok = True
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(
        captured
    ), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # alembic.config.main, but with the command's output (history, heads) captured:
            # Config's stdout defaults to the sys.stdout of import time.
            cli = CommandLine(prog="alembic")
            options = cli.parser.parse_args(argv)
            config = Config(
                file_=options.config,
                ini_section=options.name,
                cmd_opts=options,
                stdout=captured,
            )
            cli.run_cmd(config, options)
        except SystemExit as exit:
            ok = exit.code in (0, None)
        except BaseException:
            # Alembic's own crashes (AssertionError, RevisionError) are failures too.
            ok = False
            traceback.print_exc()
    output = captured.getvalue() + "".join(
        "warning: %s\n" % w.message for w in caught
    )
    answers.write(json.dumps({"ok": ok, "output": output}) + "\n")
    answers.flush()
