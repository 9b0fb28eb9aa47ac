"""Run `xnor_keras.cli.train_main` on TFDS mock data (for subprocess tests).

Usage: python tests/_mock_cli.py NUM_EXAMPLES [train.py arguments...]
"""

import sys

import tensorflow_datasets as tfds

from xnor_keras.cli import train_main

if __name__ == "__main__":
    with tfds.testing.mock_data(num_examples=int(sys.argv[1])):
        sys.exit(train_main(sys.argv[2:]))
