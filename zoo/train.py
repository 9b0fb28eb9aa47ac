#!/usr/bin/env python
"""Train a zoo model on a TFDS dataset with model.fit. Run with --help for the options.

A thin wrapper over `xnor_keras.cli.train_main` (installed as the `xnor-train` command).
"""

import os
import sys

if __name__ == "__main__":
    try:
        from xnor_keras.cli import train_main
    except ImportError:  # running from a source checkout without installing the package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from xnor_keras.cli import train_main
    sys.exit(train_main())
