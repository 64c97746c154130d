"""Dashboard layer: widget values kept in session state and mirrored in the URL query string (a link reopens a view)."""

from __future__ import annotations

import contextvars

import streamlit as st

# True while app.py runs this script run (it renders the sidebar, then the page through st.navigation)
IN_APP: contextvars.ContextVar[bool] = contextvars.ContextVar("cpd_in_app", default=False)

_ENCODERS = {
    list: lambda v: ",".join(map(str, v)),
    bool: lambda v: "1" if v else "0",
}


def _encode(value) -> str:
    for kind, enc in _ENCODERS.items():
        if isinstance(value, kind) or (kind is list and isinstance(value, tuple)):
            return enc(value)
    return str(value)


def _decode(raw: str, default):
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, (list, tuple)):
        return [v for v in raw.split(",") if v]
    return raw


def _rendered() -> dict:
    """Keys shown in this run -> (value, default); written to the URL at the end of the run."""
    run = st.session_state.setdefault("_rendered", {})
    return run


def begin_run() -> None:
    st.session_state["_rendered"] = {}
    if "_url_params" not in st.session_state:  # the link this session was opened with
        st.session_state["_url_params"] = st.query_params.to_dict()
    pending = st.session_state.pop("_pending", None)
    if pending:
        for key, value in pending.items():
            st.session_state[key] = value
            st.session_state[f"_v_{key}"] = value


def initial(key: str, default):
    """The value a widget starts from: this session's last value, else the URL (now, or as the session was
    opened, for widgets of pages not visited yet), else the default."""
    if key in st.session_state:
        return st.session_state[key]
    if f"_v_{key}" in st.session_state:
        return st.session_state[f"_v_{key}"]
    for params in (st.query_params, st.session_state.get("_url_params", {})):
        if key in params:
            try:
                return _decode(params[key], default)
            except (TypeError, ValueError):
                return default
    return default


def widget(kind: str, label: str, key: str, default, options=None, container=None, **kwargs):
    """A widget whose value persists across pages (session) and is mirrored in the URL query string.

    kind: 'selectbox', 'multiselect', 'radio', 'number_input', 'checkbox', 'toggle', 'segmented_control'.
    Values from the URL that are not valid options fall back to the default.
    """
    container = container or st
    value = initial(key, default)
    if options is not None:
        options = list(options)
        if kind == "multiselect":
            value = [v for v in (value or []) if v in options]
        elif value not in options:
            value = default if default in options else (options[0] if options else None)
    if kind == "number_input":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        try:
            value = type(default)(value)
        except (TypeError, ValueError):
            value = default
        if lo is not None and value < lo:
            value = lo
        if hi is not None and value > hi:
            value = hi
    st.session_state[key] = value
    fn = getattr(container, kind)
    if options is not None:
        result = fn(label, options, key=key, **kwargs)
    else:
        result = fn(label, key=key, **kwargs)
    st.session_state[f"_v_{key}"] = result
    _rendered()[key] = (result, default)
    return result


def sync_query_params() -> None:
    """Write this run's widget values that differ from their defaults to the URL (a shared link reopens them)."""
    rendered = st.session_state.get("_rendered", {})
    params = {}
    for key, (value, default) in rendered.items():
        if value is None:
            continue
        same = list(value) == list(default) if isinstance(value, (list, tuple)) else value == default
        if not same:
            params[key] = _encode(value)
    st.query_params.from_dict(params)  # always: after a page switch the browser's URL has none
