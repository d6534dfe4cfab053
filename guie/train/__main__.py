"""``python -m guie.train`` (and ``torchrun ... -m guie.train``): the guie-train command."""
from guie.cli import train_main

if __name__ == "__main__":
    train_main()
