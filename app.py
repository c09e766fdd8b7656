"""Hugging Face Space entry point: the GESCO demo app (``gesco demo`` serves the same app locally).

A Gradio Space runs ``python app.py``; ``demo`` is also what ``gradio app.py`` (reload mode) looks for. It needs this
package with its ``demo`` extra installed (``pip install ".[demo]"``); everything it runs (the CamVid models and the
sample maps) ships inside the package, so it works offline.
"""

import os

from gesco_diffusers.demo.app import build_demo

demo = build_demo(model=os.environ.get("GESCO_DEMO_MODEL", "demo"))

if __name__ == "__main__":
    # On a Space, Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT from the environment.
    demo.queue().launch()
