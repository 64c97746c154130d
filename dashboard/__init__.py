"""The dashboard layer of CPD Explorer: the Streamlit pieces that app.py and every page in pages/ share.

It lives outside pages/ so Streamlit never lists it as a page. Nothing here computes science: results come from
`cpd_core.study.analysis`; these modules keep the choices, cache, show progress and draw.

- url_state: widget values kept in session state and mirrored in the URL query string
- sidebar: the choices every page shares (the Selection)
- loaders: cached calls into cpd_core, with progress and plain error messages
- charts: charts, tables, downloads and the 3D structure viewer
- uploads: users' structure files, checked and stored
"""
