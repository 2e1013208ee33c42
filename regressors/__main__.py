import sys

from features_store.console import run_main

from .cli import main

sys.exit(run_main(main))
