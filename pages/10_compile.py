"""Step 10, Compile: its settings, then the engine the last run built and its measured figures."""

from app import results
from app.steps import step_nav, step_page

step_page(10)
results.from_last_run("engine/compile.json", "Engine of the last run", results.engine,
                      "No run has compiled an engine yet (turn the step on above; it needs step 9).")
step_nav(10)
