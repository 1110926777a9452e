"""Key bindings: each one only changes the view state (no I/O; the app redraws after a key).

While a filter is being typed, letters go into it; arrows, Enter, Esc and Ctrl-C keep
working.
"""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit.filters import Condition, Filter
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from qwatch.monitor.state import MonitorState


def create_key_bindings(state: MonitorState, quit: Callable[[], None]) -> KeyBindings:
    kb = KeyBindings()
    editing = Condition(lambda: state.filter_editing)
    browsing = ~editing

    def on(*keys: str, when: Filter | None = None) -> Callable[[Callable[[], None]], None]:
        """Bind keys to a no-argument action on the state."""

        def register(action: Callable[[], None]) -> None:
            for key in keys:
                kb.add(key, filter=when if when is not None else True)(lambda _e: action())

        return register

    on("c-c")(quit)
    on("q", when=browsing)(quit)
    on("up")(lambda: state.move(-1))
    on("down")(lambda: state.move(1))
    on("k", when=browsing)(lambda: state.move(-1))
    on("j", when=browsing)(lambda: state.move(1))
    on("pageup")(lambda: state.page_move(-1))
    on("pagedown")(lambda: state.page_move(1))
    on("home")(state.home)
    on("end")(state.end)
    on("tab", when=browsing)(state.focus_pane)
    on("enter", when=browsing)(state.focus_pane)
    on("enter", when=editing)(state.end_filter)
    on("escape")(state.escape)
    on("s", when=browsing)(state.cycle_sort)
    on("S", when=browsing)(state.reverse_sort)
    on("/", when=browsing)(state.start_filter)
    on("r", when=browsing)(state.cycle_range)
    on("?", when=browsing)(state.toggle_help)
    on("backspace", when=editing)(state.erase_filter)

    @kb.add("<any>", filter=editing)
    def _type(event: KeyPressEvent) -> None:
        state.type_filter(event.data)

    return kb
