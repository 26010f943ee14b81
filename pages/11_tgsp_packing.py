"""Step 11, TGSP Packing: its settings, then the last package's files with sizes and digests, and its privacy evidence."""

from app import results
from app.steps import step_nav, step_page

step_page(11)
results.from_last_run("package", "Package of the last run", results.package_view,
                      "No run has built a package yet (turn the step on above).")
step_nav(11)
