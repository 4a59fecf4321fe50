"""Device side: preprocessing, the TFLite runtime, the camera loop, and the converter.

Only the converter (`edge/convert*.py`) and `edge/check.py` may import TensorFlow, and only when they run;
everything else here needs numpy, Pillow and a TFLite runtime alone.
"""
