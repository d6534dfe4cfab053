"""``python -m guie.eval`` (and ``torchrun ... -m guie.eval``): the guie-eval command."""
from guie.cli import eval_main

if __name__ == "__main__":
    eval_main()
