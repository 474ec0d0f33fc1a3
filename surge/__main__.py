"""``python -m surge`` is the ``surge`` command."""

from surge.cli import main

if __name__ == "__main__":
    main()
