"""PEFT Studio: `peft-studio studio` (or `make studio`). The wizard's twelve steps in order, plus Runs and Hardware."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the pages import the shared UI pieces as `app.*`
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.access import guard  # noqa: E402
from app.forms import sync_widgets  # noqa: E402
from app.sidebar import render_sidebar  # noqa: E402
from studio_core.jobs import JOBS  # noqa: E402
from studio_core.workflow import STAGES  # noqa: E402

PAGES = ROOT / "pages"

st.set_page_config(page_title="PEFT Studio", layout="wide")
JOBS.supervisor()  # the queue's worker: started once per studio process, it runs each run in a child process
guard()  # before any page: the shared studio's token gate; a warning if server settings are missing
steps = sorted(PAGES.glob("[0-9][0-9]_*.py"))
navigation = st.navigation({
    "Wizard": [st.Page(str(p), title=f"{int(p.name[:2])}. {STAGES[int(p.name[:2]) - 1].title}") for p in steps],
    "Studio": [st.Page(str(PAGES / "runs.py"), title="Runs"), st.Page(str(PAGES / "hardware.py"), title="Hardware")],
}, expanded=True)  # all twelve steps visible, no "view more"
sync_widgets()
render_sidebar()
navigation.run()
