"""Host side: data, models, the training run, evaluation and the report, and the TFLite
export with its float-vs-int8 check (`export`, `export_*`, `check`).

Needs Keras, TensorFlow (for the converter) and the training data. It may import `edge/`
(the one preprocessing function, the runtime that measures the .tflite files, the small
shared modules); `edge/` never imports it. See docs/architecture.md.
"""
import os

#: TensorFlow's C++ log level for every train-side command, set before anything imports TensorFlow
#: (it reads the setting once, at import; a command's main() runs too late, after its module's
#: imports). 3 hides TensorFlow's INFO, WARNING and ERROR lines, among them "failed call to cuInit:
#: ... (303)", which on a machine without an NVIDIA driver only says there is no GPU. TensorFlow's
#: real errors still arrive as Python exceptions; TF_CPP_MIN_LOG_LEVEL=0 shows its whole log, and
#: train/devices.py reads it so when a GPU was expected and none was found.
QUIET_TENSORFLOW_LOG_LEVEL = "3"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TENSORFLOW_LOG_LEVEL)
