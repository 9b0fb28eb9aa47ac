#!/usr/bin/env python
"""Convert a Keras model or zoo name to a verified LCE .tflite. Run with --help for the options.

A thin wrapper over `xnor_keras.cli.to_tflite_main` (installed as the `xnor-to-tflite` command).
"""

import os
import sys

if __name__ == "__main__":
    # TensorFlow's own log lines are not this program's output (TF_CPP_MIN_LOG_LEVEL=0 shows them).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from xnor_keras.cli import to_tflite_main
    except ImportError:  # running from a source checkout without installing the package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from xnor_keras.cli import to_tflite_main
    sys.exit(to_tflite_main())
