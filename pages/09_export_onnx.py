"""Step 9, Export ONNX: its settings, then the last export's parity table."""

from app import results
from app.steps import step_nav, step_page

step_page(9)
results.from_last_run("onnx/export.json", "Parity of the last export", results.parity,
                      "No run has exported ONNX yet (turn the step on above).")
step_nav(9)
