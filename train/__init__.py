"""Host side: data, models, the training run, evaluation and the report, and the TFLite
export with its float-vs-int8 check (`export`, `export_*`, `check`).

Needs Keras, TensorFlow (for the converter) and the training data. It may import `edge/`
(the one preprocessing function, the runtime that measures the .tflite files, the small
shared modules); `edge/` never imports it. See docs/architecture.md.
"""

from edge.common import command

# TensorFlow reads its C++ log level once, at import, and a command's main() runs too late (after
# its module's imports, which may load TensorFlow): so the train package applies the harness's
# level as it is imported (edge.common.command.quiet_tensorflow says what it hides, and how to see it).
command.quiet_tensorflow()
