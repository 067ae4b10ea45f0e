"""`python -m cli.lab ...` runs the lab commands without the rest of the CLI."""

from cli.lab.commands import lab_app

lab_app(prog_name="schoolctl lab")
