"""``python -m kdep_cache ...``: the ``kdep-cache`` command without the console script on PATH."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="kdep-cache")
