"""The viewer without Qt: the state of the open study (``view_state``), frame composition as
numpy (``composition``), and reading series and evidence from the store (``opened_series``,
``image_loader``, ``overlay_loading``, ``overlays``).

No Qt import here (an import-linter contract checks it): the widgets in ``ui/`` render this
state and write user input into it, and the tests drive it headless.
"""
