"""``python -m guie.cli``: the guie command group."""
from guie.cli import main

main()
