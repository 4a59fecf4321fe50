"""Device side: what the Raspberry Pi and the Hugging Face Space run.

Preprocessing (`preprocess`), the TFLite runtime wrapper (`runtime`), camera sources
(`sources`), the overlay (`overlay`), the camera command (`camera`, `stopping`) with its
outputs (`sinks`) and live view (`serve`, whose page is the data file `live_view.html`), the
frame-rate meter it shares with the demo (`frame_rate`), and the
small shared modules both sides use: the run-folder contract (`run_folder`), atomic files
(`artifacts`), the command-line machinery (`configuration`), the error base class
(`errors`), number formatting (`formatting`) and the machine probe (`machine`).

It needs numpy, Pillow and a TFLite runtime alone. It imports nothing from `train/` and
no TensorFlow or Keras, at any depth (tests/test_architecture.py proves it). See
docs/architecture.md.
"""
