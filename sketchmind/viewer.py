"""A single self-contained HTML page to step through a saved trace.

Everything (images as base64 data URLs, CSS, JS) is inside the one file, so it can be mailed or opened
from an artifact store offline. Model output is untrusted: every piece of text is HTML-escaped on the
Python side, the script only shows and hides sections, and a Content-Security-Policy that allows just
this page's own script and style (by hash) and data: images stops anything that slipped through.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from html import escape
from pathlib import Path
from string import Template
from typing import Any

from sketchmind.files import write_atomic
from sketchmind.trace import VIEWS_DIR, Step, Trace, view_filename

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: #1d232b; background: #f6f7f9; }
header, .input, .layout, .others { max-width: 1200px; margin: 0 auto; padding: 16px 24px; }
h1 { font-size: 1.3em; margin: 8px 0 12px; white-space: pre-wrap; }
h2 { font-size: 1.1em; margin: 0 0 8px; }
h3 { font-size: .8em; margin: 16px 0 4px; text-transform: uppercase; letter-spacing: .05em; color: #5b6672; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.meta dt { color: #5b6672; }
dl.meta dd { margin: 0; white-space: pre-wrap; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff; font-size: .85em; }
.answered { background: #2e7d32; } .no_answer { background: #b26a00; } .error { background: #c62828; }
.running { background: #1565c0; } .correct { background: #2e7d32; } .wrong { background: #c62828; }
.layout { display: grid; grid-template-columns: 220px 1fr; gap: 24px; align-items: start; }
nav { position: sticky; top: 8px; max-height: 95vh; overflow: auto; }
nav ol { list-style: none; margin: 0; padding: 0; }
nav a { display: block; padding: 3px 8px; border-radius: 4px; color: inherit; text-decoration: none; }
nav a:hover { background: #e7eaee; }
nav a.current { background: #1d232b; color: #fff; }
nav a.has-errors::after { content: " \\25CF"; color: #c62828; }
.controls { display: none; gap: 12px; align-items: center; margin-bottom: 12px; }
.js .controls { display: flex; }
button { font: inherit; padding: 4px 14px; border: 1px solid #aab2bb; border-radius: 4px;
  background: #fff; cursor: pointer; }
button:disabled { opacity: .4; cursor: default; }
.hint { color: #5b6672; font-size: .85em; }
section.step { background: #fff; border: 1px solid #dde1e6; border-radius: 6px;
  padding: 16px 20px; margin-bottom: 16px; }
.timing { color: #5b6672; font-size: .85em; }
pre { margin: 0; padding: 10px 12px; background: #f0f2f5; border-radius: 4px; overflow-x: auto;
  font: 13px/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  white-space: pre-wrap; word-break: break-word; }
pre.thought { font-family: inherit; font-size: 14px; background: none; padding: 0; }
ul.errors { margin: 0; padding-left: 20px; color: #c62828; }
.failed { color: #c62828; }
.views { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; max-height: 80vh; border: 1px solid #dde1e6; background: #fff; }
figcaption { font-size: .85em; color: #5b6672; }
.missing { color: #5b6672; font-style: italic; }
details { margin-top: 12px; } summary { cursor: pointer; color: #5b6672; font-size: .85em; }
"""

_JS = """
(function () {
  var steps = document.querySelectorAll("section.step");
  var links = document.querySelectorAll("nav a");
  var prev = document.getElementById("prev"), next = document.getElementById("next");
  var pos = document.getElementById("pos");
  if (!steps.length) return;
  document.body.classList.add("js");
  var current = 0;
  function show(i) {
    current = Math.max(0, Math.min(steps.length - 1, i));
    steps.forEach(function (s, k) { s.hidden = k !== current; });
    links.forEach(function (a, k) { a.classList.toggle("current", k === current); });
    pos.textContent = "step " + (current + 1) + " of " + steps.length;
    prev.disabled = current === 0;
    next.disabled = current === steps.length - 1;
    try { history.replaceState(null, "", "#" + steps[current].id); } catch (e) {}
  }
  links.forEach(function (a, k) {
    a.addEventListener("click", function (e) { e.preventDefault(); show(k); });
  });
  prev.addEventListener("click", function () { show(current - 1); });
  next.addEventListener("click", function () { show(current + 1); });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "ArrowLeft") { show(current - 1); e.preventDefault(); }
    if (e.key === "ArrowRight") { show(current + 1); e.preventDefault(); }
  });
  var start = 0;
  steps.forEach(function (s, k) { if ("#" + s.id === location.hash) start = k; });
  show(start);
})();
"""

# $-placeholders (string.Template): the CSS and JS above contain no "$", and braces need no doubling.
_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="$csp">
<title>$title</title>
<style>$css</style>
</head>
<body>
<header>
<h1>$question</h1>
<dl class="meta">
$meta
</dl>
</header>
<section class="input">
<h3>Input</h3>
$input
</section>
<div class="layout">
<nav><h3>Steps</h3><ol>
$nav
</ol></nav>
<main>
<div class="controls"><button id="prev">&larr; Prev</button><span id="pos"></span>\
<button id="next">Next &rarr;</button><span class="hint">or use the &larr; / &rarr; keys</span></div>
$steps
</main>
</div>
$others
<script>$js</script>
</body>
</html>
""")


def write_html(trace_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write one self-contained HTML page for the trace in ``trace_dir``; return its path.

    ``out`` defaults to ``trace_dir/trace.html``. Raises ``TraceError`` if ``trace_dir`` is not a trace.
    """
    root = Path(trace_dir)
    trace = Trace.load(root)
    images = _images(root / VIEWS_DIR)
    captions = {int(v["index"]): _caption(v) for v in trace.views if isinstance(v.get("index"), int)}

    def figures(ids: list[int]) -> str:
        return "".join(_figure(i, images.get(i), captions.get(i, f"view {i}")) for i in ids)

    shown = {1} | {i for step in trace.steps for i in step.view_ids}
    others = sorted((set(images) | set(captions)) - shown)
    page = _PAGE.substitute(
        csp=_csp(),
        title=escape(f"Trace: {trace.question[:80]}"),
        css=_CSS,
        js=_JS,
        question=escape(trace.question),
        meta="\n".join(_meta(trace)),
        input=figures([1]),
        nav="\n".join(_nav_item(step) for step in trace.steps) or "<li class='missing'>no steps</li>",
        steps="\n".join(_step(step, figures(step.view_ids)) for step in trace.steps),
        others=f'<section class="others"><h3>Other views</h3><div class="views">{figures(others)}</div></section>'
        if others
        else "",
    )
    path = Path(out) if out is not None else root / "trace.html"
    write_atomic(path, page.encode("utf-8"))
    return path


def _csp() -> str:
    # Hashes, not 'unsafe-inline': a <script> injected through unescaped model output would not run.
    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"

    return f"default-src 'none'; img-src data:; style-src {digest(_CSS)}; script-src {digest(_JS)}"


def _images(directory: Path) -> dict[int, str]:
    """Data URLs of the view PNGs, by view index."""
    found: dict[int, str] = {}
    for path in sorted(directory.glob("*.png")) if directory.is_dir() else []:
        if path.stem.isdigit():
            found[int(path.stem)] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return found


def _caption(view: dict[str, Any]) -> str:
    """Like ``View.describe()``, rebuilt from a provenance record."""
    size = f"{view.get('width')}x{view.get('height')}"
    actions = view.get("actions") or []
    if not actions:
        return f"view {view.get('index')}: input ({size})"
    made = ", ".join(_action_name(a) for a in actions if isinstance(a, dict))
    return f"view {view.get('index')}: {made} on view {view.get('parent')} ({size})"


def _action_name(action: dict[str, Any]) -> str:
    arguments = action.get("arguments")
    label = arguments.get("label") if isinstance(arguments, dict) else None
    return f"{action.get('name')} {label!r}" if label else str(action.get("name"))


def _figure(index: int, url: str | None, caption: str) -> str:
    name = view_filename(index)
    image = f'<img src="{url}" alt="view {index}">' if url else f'<p class="missing">{name} was not saved</p>'
    return f"<figure>{image}<figcaption>{escape(caption)}</figcaption></figure>"


INTERNAL_CALL_FIELDS = ("id", "group")  # how the agent pairs and groups calls: not what the model drew


def verdict(trace: Trace) -> bool | None:
    """Whether the answer is right, where the trace knows the ground truth (``meta["correct"]``, which the
    demo and puzzle runs record); ``None`` where nothing says."""
    correct = trace.meta.get("correct") if isinstance(trace.meta, dict) else None
    return correct if isinstance(correct, bool) else None


def _status_badge(trace: Trace) -> str:
    """The status as a badge; an answer checked against the ground truth reads correct or wrong."""
    correct = verdict(trace)
    if trace.status == "answered" and correct is not None:
        word, css = ("\u2714 correct", "correct") if correct else ("\u2718 wrong", "wrong")
        return f'<span class="badge {css}">{word}</span>'
    badge = f'<span class="badge {escape(trace.status)}">{escape(trace.status)}</span>'
    if trace.status == "answered":  # no ground truth to check against
        badge += ' <span class="hint">(no ground truth to check the answer against)</span>'
    elif correct is False:
        badge += ' <span class="badge wrong">\u2718 wrong</span>'
    return badge


def _expected(trace: Trace) -> str | None:
    expected = trace.meta.get("expected") if isinstance(trace.meta, dict) else None
    return None if expected is None else str(expected)


def _meta(trace: Trace) -> list[str]:
    rows = [("status", _status_badge(trace))]
    rows.append(("answer", escape(trace.answer) if trace.answer is not None else '<span class="missing">none</span>'))
    if (expected := _expected(trace)) is not None and verdict(trace) is not True:
        rows.append(("expected", escape(expected)))
    if trace.error:
        rows.append(("error", f'<span class="failed">{escape(trace.error)}</span>'))
    rows += [(key, escape(value)) for key, value in [("model", trace.model), ("protocol", trace.protocol)]]
    rows += [("mode", escape(trace.mode)), ("created", escape(trace.created))]
    seconds = sum(s.seconds or 0.0 for s in trace.steps)
    rows.append(
        ("totals", f"{len(trace.steps)} steps, {trace.n_images} views, {trace.total_tokens} tokens, {seconds:.1f} s")
    )
    if trace.meta:
        rows.append(("meta", f"<pre>{escape(_pretty(trace.meta))}</pre>"))
    return [f"<dt>{key}</dt><dd>{value}</dd>" for key, value in rows]


def _nav_item(step: Step) -> str:
    names = ", ".join(str(c.get("name")) for c in step.calls) or "no calls"
    css = ' class="has-errors"' if step.errors else ""
    return f'<li><a href="#step-{step.index}"{css}>{step.index}. {escape(names)}</a></li>'


def _timing(step: Step) -> str:
    parts = []
    if step.tokens_in is not None or step.tokens_out is not None:
        parts.append(f"tokens in {step.tokens_in if step.tokens_in is not None else '?'}")
        parts.append(f"out {step.tokens_out if step.tokens_out is not None else '?'}")
    if step.seconds is not None:
        parts.append(f"model {step.seconds:.2f} s")
    if step.render_seconds is not None:
        parts.append(f"render {step.render_seconds:.3f} s")
    return " · ".join(parts)


def _pretty(value: Any, indent: str = "") -> str:
    """Indented JSON, but a list of plain values (a bbox, a point) stays on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list | tuple) and any(isinstance(v, dict | list | tuple) for v in value):
        return "[\n" + ",\n".join(inner + _pretty(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False, default=str)


def _shown_calls(calls: list[dict[str, Any]]) -> list[Any]:
    """The calls as the model wrote them: name and arguments, without the agent's bookkeeping fields."""
    return [
        {k: v for k, v in call.items() if k not in INTERNAL_CALL_FIELDS} if isinstance(call, dict) else call
        for call in calls
    ]


def _step(step: Step, figures: str) -> str:
    html = [f'<section class="step" id="step-{step.index}">', f"<h2>Step {step.index}</h2>"]
    if timing := _timing(step):
        html.append(f'<div class="timing">{timing}</div>')
    if step.thought:
        html.append(f'<h3>Thought</h3><pre class="thought">{escape(step.thought)}</pre>')
    if step.calls:
        html.append(f"<h3>Tool calls</h3><pre>{escape(_pretty(_shown_calls(step.calls)))}</pre>")
    if step.errors:
        items = "".join(f"<li>{escape(error)}</li>" for error in step.errors)
        html.append(f'<h3>Errors</h3><ul class="errors">{items}</ul>')
    if figures:
        html.append(f'<h3>Views</h3><div class="views">{figures}</div>')
    if step.raw:
        html.append(f"<details><summary>raw model output</summary><pre>{escape(step.raw)}</pre></details>")
    html.append("</section>")
    return "\n".join(html)
