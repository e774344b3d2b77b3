"""Command line: one module per command, discovered at start; heavy imports happen inside run()."""
