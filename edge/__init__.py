"""Device side: what the Raspberry Pi and the Hugging Face Space run.

Preprocessing (`preprocess`), the TFLite runtime wrapper (`runtime`) and its command
(`classify`), the occlusion map (`occlusion`), camera sources (`sources`), the overlay
(`overlay`), the camera command (`camera`, `stopping`) with its outputs (`sinks`) and live view
(`serve`, whose page is the data file `live_view.html`), and the frame-rate meter it shares with
the demo (`frame_rate`). `edge.common` is the shared base both sides use: the run-folder
contract and model discovery (`run_folder`), atomic files (`artifacts`), the command harness
(`command`) and its flags from dataclasses (`configuration`), the error base class (`errors`),
number formatting (`formatting`) and the machine probe (`machine`).

It needs numpy, Pillow and a TFLite runtime alone. It imports nothing from `train/` and
no TensorFlow or Keras, at any depth (tests/test_architecture.py proves it). See
docs/architecture.md.
"""
