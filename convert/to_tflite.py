#!/usr/bin/env python
"""Convert a Keras model or zoo name to a verified LCE .tflite. Run with --help for the options.

A thin wrapper over `xnor_keras.cli.to_tflite_main` (installed as the `xnor-to-tflite` command).
"""

import os
import sys

if __name__ == "__main__":
    try:
        from xnor_keras.cli import to_tflite_main
    except ImportError:  # running from a source checkout without installing the package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from xnor_keras.cli import to_tflite_main
    sys.exit(to_tflite_main())
