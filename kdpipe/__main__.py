"""``python -m kdpipe`` = the ``kdpipe`` command."""

from kdpipe.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
