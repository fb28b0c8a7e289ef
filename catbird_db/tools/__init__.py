"""What developers and operators run: the `catbird-db` command and the tools behind it.

Nothing here is imported by `import catbird_db` or by a running `Database`; the command
imports each tool only when its subcommand runs. Their SQL is `sql/tools/*.sql`, in a
registry of its own (`catbird_db.tools.sql`).
"""
