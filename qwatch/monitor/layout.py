"""The screen as small container factories over the view state (ptpython's habit).

Every control reads the state when it is drawn, through the pure functions in `render`;
nothing here holds data of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from prompt_toolkit.application.current import get_app
from prompt_toolkit.filters import Condition
from prompt_toolkit.layout import (
    ConditionalContainer,
    Float,
    FloatContainer,
    HSplit,
    Layout,
    Window,
)
from prompt_toolkit.layout.containers import Container
from prompt_toolkit.layout.controls import FormattedTextControl, UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.output import Output

from qwatch.monitor import render
from qwatch.monitor.render import Line
from qwatch.monitor.state import MonitorState

LinesFn = Callable[[int, int], list[Line]]
PANE_MIN = 7
_OTHER_LINES = 5  # title, table header, the pane's rule, status bar, a line to spare


class LinesControl(UIControl):
    """Draws whatever `lines(width, height)` returns: only what fits is ever built.

    FormattedTextControl would build every line and let the window scroll; with 200 rows
    that is wasted work each frame, so the table scrolls itself (`MonitorState.visible`).
    """

    def __init__(self, lines: LinesFn, *, focusable: bool = False) -> None:
        self._lines = lines
        self._focusable = focusable

    def is_focusable(self) -> bool:
        return self._focusable

    def create_content(self, width: int, height: int) -> UIContent:
        lines = self._lines(width, height)[:height]
        return UIContent(get_line=lambda i: lines[i], line_count=len(lines), show_cursor=False)


def _line_window(fragments: Callable[[], Line], style: str = "") -> Window:
    return Window(FormattedTextControl(fragments), height=1, style=style)


def title_bar(state: MonitorState) -> Container:
    return _line_window(lambda: render.title(state), style="class:title.bar")


def banner_bar(state: MonitorState, now: Callable[[], datetime]) -> Container:
    def lines() -> Line:
        out: Line = []
        for i, line in enumerate(render.banner(state, now())):
            out += ([("", "\n")] if i else []) + line
        return out

    shown = Condition(
        lambda: bool(state.alerts) or any(live.error for live in state.sites.values())
    )
    # Wrapped, so a long reason is read in full rather than cut at the edge.
    window = Window(
        FormattedTextControl(lines), wrap_lines=True, dont_extend_height=True, style="class:banner"
    )
    return ConditionalContainer(window, filter=shown)


def hint_bar(state: MonitorState) -> Container:
    shown = Condition(lambda: render.hint(state) is not None)
    text = FormattedTextControl(lambda: render.hint(state) or [])
    window = Window(text, wrap_lines=True, dont_extend_height=True)
    return ConditionalContainer(window, filter=shown)


def table_window(state: MonitorState, now: Callable[[], datetime]) -> Window:
    control = LinesControl(lambda w, h: render.table(state, w, h, now()), focusable=True)
    return Window(control, height=Dimension(min=3, weight=3))


def pane_window(state: MonitorState, now: Callable[[], datetime]) -> Container:
    control = LinesControl(lambda w, h: render.pane(state, w, h, now()))
    rule = Window(height=1, char="─", style="class:pane.border")
    shown = Condition(lambda: state.store.usable)
    body = Window(
        control, height=lambda: Dimension.exact(pane_height(get_app().output, len(state.rows)))
    )
    return ConditionalContainer(HSplit([rule, body]), filter=shown)


def pane_height(output: Output, table_rows: int) -> int:
    """What the table does not need, but at least a third of the screen and at most two:
    a few clusters leave room for many events, a fleet keeps most of the screen."""
    rows = output.get_size().rows
    spare = rows - table_rows - _OTHER_LINES
    return max(PANE_MIN, min(max(rows // 3, spare), rows * 2 // 3))


def status_bar(state: MonitorState, now: Callable[[], datetime]) -> Container:
    control = LinesControl(lambda w, h: [render.status(state, now(), w)])
    return Window(control, height=1, style="class:status")


def help_float(state: MonitorState) -> Float:
    lines = render.help_lines()
    width = max(sum(len(fragment[1]) for fragment in line) for line in lines) + 1
    window = Window(
        LinesControl(lambda w, h: lines), width=width, height=len(lines), style="class:help"
    )
    return Float(ConditionalContainer(window, filter=Condition(lambda: state.help)))


def create_layout(state: MonitorState) -> tuple[Layout, Window]:
    """The whole screen, and the table window (the one that holds the focus)."""
    now = state.clock
    table = table_window(state, now)
    body = HSplit(
        [
            title_bar(state),
            banner_bar(state, now),
            hint_bar(state),
            table,
            pane_window(state, now),
            status_bar(state, now),
        ]
    )
    root = FloatContainer(body, floats=[help_float(state)])
    return Layout(root, focused_element=table), table
