"""The CLI verbs, one module per group (typer sub-apps mounted by schoolctl.cli.main)."""
