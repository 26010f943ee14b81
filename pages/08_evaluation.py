"""Step 8, Evaluation: its settings, then the last run's results (base against tuned)."""

from app import results
from app.steps import step_nav, step_page

step_page(8)
results.from_last_run("eval/metrics.json", "Results of the last run", results.evaluation,
                      "No run has been evaluated yet: results appear here when a run finishes step 8.")
step_nav(8)
