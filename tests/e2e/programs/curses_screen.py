"""A small full-screen curses program: a box, colours, a key echo; q quits."""

import curses


def main(screen: "curses.window") -> None:
    # Output must not depend on when keys arrive: no typeahead check mid-refresh.
    curses.typeahead(-1)
    curses.start_color()
    curses.init_pair(1, curses.COLOR_YELLOW, curses.COLOR_BLUE)
    rows, cols = screen.getmaxyx()
    screen.box()
    screen.addstr(1, 2, f"curses {cols}x{rows}", curses.color_pair(1) | curses.A_BOLD)
    screen.addstr(3, 2, "press keys, q quits")
    screen.refresh()
    while True:
        key = screen.getkey()
        if key == "q":
            break
        screen.addstr(5, 2, f"got {key!r:<10}", curses.A_REVERSE)
        screen.refresh()


curses.wrapper(main)
