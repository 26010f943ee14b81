"""PEFT Studio: `peft-studio studio` (or `make studio`). Home, the wizard's twelve steps in order, then Runs, Chat
and Hardware."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the pages import the shared UI pieces as `app.*`
    sys.path.insert(0, str(ROOT))

import pandas  # noqa: E402,F401
import plotly.graph_objects  # noqa: E402,F401
import streamlit as st  # noqa: E402

from app.access import guard  # noqa: E402
from app.session import keep_draft  # noqa: E402
from app.sidebar import render_sidebar  # noqa: E402
from app.steps import step_title  # noqa: E402
from studio_core.jobs import JOBS  # noqa: E402

PAGES = ROOT / "pages"
# pandas and plotly are imported whole above, before the queue's thread starts: a page's chart importing them while
# that thread imports pandas too let Python hand one of them a partially initialised pandas ("has no attribute
# 'Series'", seen on the first load of step 6).

st.set_page_config(page_title="PEFT Studio", layout="wide")
JOBS.supervisor()  # the queue's worker: started once per studio process, it runs each run in a child process
guard()  # before any page: the shared studio's token gate; a warning if server settings are missing
steps = sorted(PAGES.glob("[0-9][0-9]_*.py"))
navigation = st.navigation({
    "Start": [st.Page(str(PAGES / "home.py"), title="Home", default=True)],
    "Wizard": [st.Page(str(p), title=step_title(int(p.name[:2]))) for p in steps],
    "Studio": [st.Page(str(PAGES / "runs.py"), title="Runs"), st.Page(str(PAGES / "chat.py"), title="Chat"),
               st.Page(str(PAGES / "hardware.py"), title="Hardware")],
}, expanded=True)  # all twelve steps visible, no "view more"
keep_draft()  # callbacks have already written this rerun's edits to the config
render_sidebar()
navigation.run()
