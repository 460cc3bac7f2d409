"""What staging does to an executed notebook before it becomes a page (no build needed)."""

from __future__ import annotations

import nbformat

from aigc_utils.runner import alt_text_to_cell_options, drop_progress_bars, export_marks_to_notes


def test_progress_bars_leave_the_page_and_the_rest_stays():
    bar = "SGD: 100%|██████████| 32/32 [00:00<00:00, 49.25it/s, loss=0.822]"
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=f"SGD:   0%|          | 0/32 [00:00<?, ?it/s]\r{bar}\n"),
        nbformat.v4.new_output("stream", name="stdout", text="epoch 1: loss 0.82\n64it [00:01, 50.1it/s]\nbest 0.7\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": bar}),  # a widget's final text
        nbformat.v4.new_output("display_data", data={"text/plain": "accuracy 100%|all"}),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    drop_progress_bars(nb)
    assert [o.get("text", o.get("data", {}).get("text/plain")) for o in nb.cells[0].outputs] == [
        "epoch 1: loss 0.82\nbest 0.7\n", "accuracy 100%|all"
    ]


def test_each_figure_cell_gets_the_alt_text_its_kernel_wrote():
    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    one = nbformat.v4.new_code_cell("plot()")
    one.outputs = [nbformat.v4.new_output("display_data", data=png,
                                          metadata={"image/png": {"alt": "Figure: loss against step"}})]
    two = nbformat.v4.new_code_cell("plot(); plot()")
    two.outputs = [nbformat.v4.new_output("display_data", data=png, metadata={"image/png": {"alt": a}})
                   for a in ("Figure: a", "Figure: b")]
    bare = nbformat.v4.new_code_cell("print(1)")
    bare.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb = nbformat.v4.new_notebook(cells=[one, two, bare])
    alt_text_to_cell_options(nb)
    assert one.metadata["mystnb"]["image"]["alt"] == "Figure: loss against step"
    assert two.metadata["mystnb"]["image"]["alt"] == "Figure: a | Figure: b"
    assert "mystnb" not in bare.metadata


def test_export_marks_read_as_notes_on_the_page():
    setup = nbformat.v4.new_code_cell("#| default_exp basics\nimport torch")
    alone = nbformat.v4.new_code_cell("#| default_exp basics")
    exported = nbformat.v4.new_code_cell("#| export\ndef f():\n    return 1")
    plain = nbformat.v4.new_code_cell("f()  # not #| export")
    nb = nbformat.v4.new_notebook(cells=[setup, alone, exported, plain])
    export_marks_to_notes(nb)
    assert setup.source == "import torch" and "remove-cell" in alone.metadata["tags"]
    assert exported.source.splitlines()[0] == "# saved in aigc_utils.basics (later chapters import it from there)"
    assert plain.source == "f()  # not #| export"


def test_photos_go_on_the_page_as_jpeg_and_line_art_stays_png():
    import base64
    import io

    import numpy as np
    from PIL import Image

    from aigc_utils.runner import PHOTO_MIN_BYTES, photos_as_jpeg

    def png(pixels: np.ndarray) -> str:
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "PNG")
        assert len(out.getvalue()) > PHOTO_MIN_BYTES
        return base64.b64encode(out.getvalue()).decode()

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)  # every pixel its own colour
    grid = rng.integers(0, 2, (1200, 1200), dtype=np.uint8) * 255  # big, but two colours
    cells = []
    for pixels in (photo, grid):
        cell = nbformat.v4.new_code_cell("show()")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png(pixels)},
                                               metadata={"image/png": {"alt": "Figure: x"}})]
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    photos_as_jpeg(nb)
    photo_out, grid_out = (c.outputs[0] for c in nb.cells)
    assert set(photo_out.data) == {"image/jpeg"} and photo_out.metadata["image/jpeg"]["alt"] == "Figure: x"
    assert Image.open(io.BytesIO(base64.b64decode(photo_out.data["image/jpeg"]))).format == "JPEG"
    assert set(grid_out.data) == {"image/png"}
