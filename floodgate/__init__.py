"""App shell: the `floodgate` command line, settings, and the all-in-one `run` supervisor."""
