"""The app's header, whose sub-title changes every refresh without redrawing the whole screen.

Setting `App.sub_title` repaints the whole screen, and Textual's Header puts the new title
with `Static.update`, which lays the screen out again (each about as long as drawing every
widget); the title is one line cut to the header's fixed width, so its size never changes and
a repaint of the title alone is enough: `FixedHeader.show_title`.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.visual import VisualType
from textual.widgets import Header
from textual.widgets._header import HeaderClock, HeaderClockSpace, HeaderIcon, HeaderTitle


class FixedTitle(HeaderTitle):
    """A header title repainted in place: one line of the header's width, whatever it says."""

    def update(self, content: VisualType = "", *, layout: bool = True) -> None:
        super().update(content, layout=False)


class FixedHeader(Header):
    """Textual's Header with a title that is repainted, not laid out, when it changes."""

    def compose(self) -> ComposeResult:
        yield HeaderIcon().data_bind(Header.icon)
        yield FixedTitle()
        if self._show_clock:
            yield HeaderClock().data_bind(Header.time_format)
        else:
            yield HeaderClockSpace()

    def show_title(self) -> None:
        """Repaint the title after the app's sub-title was set without its watchers."""
        self.query_one(FixedTitle).update(self.format_title())
