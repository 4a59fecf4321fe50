"""Host side: data, models, the training run, evaluation and the report, and the TFLite
export with its float-vs-int8 check (`export`, `export_*`, `check`).

Needs Keras, TensorFlow (for the converter) and the training data. It may import `edge/`
(the one preprocessing function, the runtime that measures the .tflite files, the small
shared modules); `edge/` never imports it. See docs/architecture.md.
"""
