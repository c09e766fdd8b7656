"""The demo app of ``gesco demo`` (and of the Hugging Face Space ``app.py``): see :mod:`.app` (the Gradio UI),
:mod:`.core` (what it computes, no UI) and :mod:`.cli` (the command). Importing this package loads nothing heavy."""
