"""What staging does to an executed notebook before it becomes a page (no build needed)."""

from __future__ import annotations

import nbformat

from aigc_utils.runner import drop_progress_bars


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
