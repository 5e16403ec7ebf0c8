"""The `ledger` command line: thin click commands over the tasks in ledger.tasks and
projections.tasks, with one module for output (render) and one exit path (exits)."""
