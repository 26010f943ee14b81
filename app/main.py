"""PEFT Studio entry point: `streamlit run app/main.py`.

Until the wizard pages exist, the studio opens on its home (runs read from disk) and the hardware page.
"""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent.parent / "pages"

st.set_page_config(page_title="PEFT Studio", layout="wide")
navigation = st.navigation([
    st.Page(str(PAGES / "home.py"), title="Studio home", default=True),
    st.Page(str(PAGES / "hardware.py"), title="Hardware"),
])
navigation.run()
