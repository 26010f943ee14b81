"""Step 10, Compile: its settings, then the engines the last run built, their parity figures and downloads."""

from app import results
from app.steps import step_nav, step_page

step_page(10)
results.from_last_run("engine/compile.json", "Engines of the last run", results.engine,
                      "No run has compiled an engine yet (turn the step on above; it builds from step 6's merged model).")
step_nav(10)
