"""One stage per file: a frozen config dataclass and the code that runs it on Ray Data / Ray Train."""
