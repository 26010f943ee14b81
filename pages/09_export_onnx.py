"""Step 9, Export ONNX: its settings (see app/steps.py for what it does)."""

from app.steps import step_page

step_page(9)
