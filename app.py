"""The composed-search app as a Hugging Face Space (Gradio SDK): `python app.py` here or on a Space.

Set `MRA_CIR_MODEL` (a model id) and `MRA_CIR_GALLERY` (a dataset with an `image` column) in the Space's variables;
unset, it serves the last local `mra-cir quickstart` run, like `mra-cir app`. The other variables and the Space's
files: `docs/app.md` and `mra_cir/app/space.py`.
"""

from __future__ import annotations

from mra_cir.app.space import demo_from_env
from mra_cir.app.ui import launch_options

demo = demo_from_env()

if __name__ == "__main__":
    # server name and port from Gradio's environment variables (a Space sets GRADIO_SERVER_NAME=0.0.0.0)
    demo.queue().launch(**launch_options(server_name=None, port=None, share=False))
