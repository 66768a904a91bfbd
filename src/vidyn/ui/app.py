"""The vidyn web UI (Gradio): run exported models on your own clips, side by side, with their runtimes.

Every button is a thin call into `vidyn.api` (`vidyn.ui.handlers`); the page is laid out here
(`vidyn.ui.tabs`). It serves 127.0.0.1 unless `--host` says otherwise, never makes share links, sends no
analytics and loads nothing from outside the server (fonts, scripts and styles ship with Gradio). Start
it with `vidyn ui --models DIR [--samples DIR]`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidyn import api
from vidyn.errors import VidynError
from vidyn.ui import handlers
from vidyn.ui.limits import DEFAULT_LIMITS, Limits, scrub

log = logging.getLogger("vidyn.ui")
OK, WARN = "", "⚠️ "


def require_gradio() -> Any:
    # No telemetry and no version check: set before Gradio is imported, which reads it at import.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio as gr
    except ImportError:
        raise VidynError("the web UI needs Gradio: pip install 'vidyn[ui]'") from None
    return gr


def guard(fn: Callable[..., Any], outputs: int) -> Callable[..., Any]:
    """`fn` for a Gradio event whose last output is the tab's status line.

    A user error (VidynError) clears the other outputs and shows its message in the status line, with
    the user's file names instead of server paths, and is logged as one line, never a traceback. Anything
    else is a bug: logged with its traceback and reported in the page as an internal error.
    """
    gr = require_gradio()
    wants_progress = "progress" in inspect.signature(fn).parameters
    tracker = gr.Progress()  # Gradio finds it as a parameter default and drives the page's progress bar

    def wrapped(*args: Any, progress: Any = tracker) -> Any:
        kwargs = {"progress": lambda f, what: progress(f, desc=what)} if wants_progress else {}
        try:
            result = fn(*args, **kwargs)
        except VidynError as exc:
            message = scrub(str(exc), args)
            log.info("user error: %s", message)
            return (*([None] * (outputs - 1)), f"{WARN}{message}")
        except Exception as exc:  # a bug, not the user's doing: keep the trace for whoever fixes it
            log.exception("internal error in %s", getattr(fn, "__name__", fn))
            message = scrub(f"{type(exc).__name__}: {exc}", args)
            return (*([None] * (outputs - 1)), f"{WARN}internal error (see the server log): {message}")
        return result if isinstance(result, tuple) else (result, OK)

    functools.update_wrapper(wrapped, fn, assigned=("__name__", "__doc__"))
    return wrapped


def _summary(models: list[dict[str, Any]], root: str | Path) -> str:
    count = {f: sum(m["family"] == f for m in models) for f in ("predictor", "classifier", "generator")}
    interp = sum(bool(m.get("interpolates")) for m in models)
    return (
        f"# vidyn\nFound **{len(models)} exported model(s)** under `{root}`: {count['predictor']} "
        f"predictor(s) ({interp} continuous-time), {count['classifier']} classifier(s), "
        f"{count['generator']} generator(s). Everything runs on this machine; the page loads nothing from "
        "elsewhere and sends nothing anywhere."
    )


def build_app(
    models_root: str | Path = ".", *, samples_dir: str | Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> Any:
    """The Gradio Blocks app over the exported models found under `models_root` (symbolic links
    followed), with sample clips rendered or read from `samples_dir`."""
    gr = require_gradio()
    from vidyn.ui import tabs

    models = api.find_models(models_root)
    samples = handlers.sample_choices(samples_dir)
    with gr.Blocks(title="vidyn", analytics_enabled=False) as app:
        gr.Markdown(_summary(models, models_root), elem_id="summary")
        with gr.Tabs():
            tabs.predict_tab(models, samples, limits)
            tabs.interpolate_tab(models, samples, limits, models_root)
            tabs.classify_tab(models, samples, limits, models_root)
            tabs.generate_tab(models, limits, models_root)
            tabs.compare_tab(models_root)
    return app


def launch(
    models_root: str | Path = ".",
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    samples_dir: str | Path | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Serve the app on `host:port` until interrupted (no share link, no analytics, no outside assets)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes of the server
    app = build_app(models_root, samples_dir=samples_dir, limits=limits)
    app.queue(default_concurrency_limit=1)  # one model run at a time: they share the CPU
    where = "this machine only" if host in ("127.0.0.1", "localhost") else f"open on {host}"
    print(f"vidyn ui: http://{host}:{port}  ({where}; Ctrl+C stops it)", flush=True)
    # SIGTERM (a service manager, `kill`) stops the server like Ctrl+C, so the request folders go too.
    if threading.current_thread() is threading.main_thread():  # only there may handlers be set
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            max_file_size=f"{limits.max_mb:g}mb",
            allowed_paths=[str(Path(samples_dir).resolve())] if samples_dir else None,
            footer_links=[],
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            show_error=False,
            quiet=True,
        )
    finally:
        handlers.WORK.close()


def _stop_like_ctrl_c(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
