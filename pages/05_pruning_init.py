"""Step 5: what it will do, in one line (its page comes with its own work)."""

from app.steps import step_nav, step_page

step_page(5)
step_nav(5)
