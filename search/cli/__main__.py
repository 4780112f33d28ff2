import sys

from search.cli import main

# Guarded: a worker process spawned from `python -m search.cli` imports this module again as `__mp_main__`.
if __name__ == "__main__":
    sys.exit(main())
