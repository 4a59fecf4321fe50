"""The Hugging Face Space's entry point: the shared demo UI (demo/ui.py) over this Space's models/ folder.

Inside an assembled Space folder (`python hf_space/deploy.py --dry-run --out FOLDER`):

    cd FOLDER && python app.py          # what the Space runs; port from $GRADIO_SERVER_PORT

From the repository, `python hf_space/app.py` serves the newest runs/*/tflite the same way.
"""

from __future__ import annotations

from pathlib import Path

# In the Space, demo/ and edge/ sit beside this file; in the repository they are installed (pip install -e).
from demo import app as demo_app

HERE = Path(__file__).resolve().parent

# A Space sets GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT itself; Gradio reads both.
config = demo_app.DemoConfig(run=str(HERE / "models") if (HERE / "models").is_dir() else None)
demo, models = demo_app.build(config)

if __name__ == "__main__":
    print(f"serving {models.files.model}", flush=True)
    demo_app.ui.launch(demo, models)
