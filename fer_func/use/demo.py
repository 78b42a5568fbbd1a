"""``fer-func demo MODEL``: a web page to try an exported network on a photo, built with gradio.

    upload or webcam photo (a file gradio keeps) --(predict.faces_of: cascade, crops, the model)-->
        per face: box, 7 probabilities, label
        --> the photo with numbered boxes (annotate.annotated) and one bar chart (gr.Label) per face

The model is loaded once, when the server starts, so a wrong file is reported on the command line
before any page is served. Faces are numbered left to right, as ``predict`` lists them; chart i is
box i. The page is served on 127.0.0.1 unless --host says otherwise; it loads nothing from the
internet (gradio's default theme ships its fonts), and gradio's usage analytics are switched off.
"""
from __future__ import annotations

import os

from fer_func.use import annotate
from fer_func.use.errors import UseError

TITLE = "fer-func: facial expressions in a photo"
NO_FACE = ("no face found. The detector (OpenCV's Haar cascade) finds upright, frontal faces of at least "
           "32 px; try a photo where the faces look at the camera.")


def analyse(model, path) -> tuple:
    """One photo file -> ``(annotated RGB image, status line, faces)``, ``faces`` as ``predict --json`` lists them.

    ``path`` None (the photo was cleared) gives an empty result."""
    from fer_func.use.predict import faces_of

    if path is None:
        return None, "", []
    result = faces_of(model, path)
    found = result["faces"]
    status = NO_FACE if not found else f"{len(found)} face{'s' if len(found) > 1 else ''} found"
    return annotate.annotated(result, numbered=True), status, found


def chart_title(i: int, face: dict) -> str:
    """The heading of face i's chart (1-based, the number drawn beside its box)."""
    x, y, w, h = face["box"]
    return f"face {i} at x={x}, y={y} ({w}x{h} px)"


def _gradio():
    # Before the import: gradio reads this once, and a page that tries a model should not report usage anywhere.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UseError("the demo page needs gradio: pip install -e '.[demo]'") from None
    return gradio


def build(model):
    """The page for a loaded model (predict.load_model) as a ``gradio.Blocks``, not yet served."""
    gr = _gradio()
    meta = model.meta
    members = meta.get("source", {}).get("variants", [])
    about = f"`{model.path.name}`: {meta.get('format', model.format)}" + (
        f", {meta.get('kind', 'single')} of {len(members)}" if members else "")

    def run(path):
        try:
            return analyse(model, path)
        except UseError as e:  # a file that is not an image: a message on the page, not a traceback
            raise gr.Error(str(e)) from None

    with gr.Blocks(title="fer-func demo", analytics_enabled=False) as page:
        gr.Markdown(f"# {TITLE}\nUpload a photo or take one with the webcam; every face found gets a box and "
                    f"a chart of its {len(meta['classes'])} class probabilities. Model: {about}.")
        with gr.Row():
            photo = gr.Image(sources=["upload", "webcam"], type="filepath", label="photo", elem_id="photo")
            # png, not gradio's default webp: lossless boxes and text, the very pixels annotate.py drew
            boxed = gr.Image(type="pil", format="png", label="faces found", interactive=False, elem_id="boxed")
        status = gr.Markdown(elem_id="status")
        found = gr.State([])

        @gr.render(inputs=found)
        def charts(faces):
            with gr.Row():
                for i, face in enumerate(faces, 1):
                    gr.Label(face["probs"], num_top_classes=len(face["probs"]), label=chart_title(i, face),
                             elem_classes=["face-probs"], min_width=220)

        photo.change(run, inputs=photo, outputs=[boxed, status, found])
    return page


def serve(model_path, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Load the model, then serve the page until Ctrl-C."""
    from fer_func.use import faces
    from fer_func.use.predict import load_model

    model = load_model(model_path)
    faces.cascade()  # a missing OpenCV is reported now, not on the first upload
    page = build(model)
    print(f"serving the demo of {model_path} at http://{host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        page.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                    mcp_server=False, pwa=False, quiet=True)
    except OSError:  # gradio's own message names its launch() parameters, not our flags
        raise UseError(f"cannot serve on {host}:{port}: the port is taken, or {host} is not an address of this "
                       f"machine; pass another with --port P (or --host 127.0.0.1)") from None
