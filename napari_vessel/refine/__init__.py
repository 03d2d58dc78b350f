"""Editing labels by hand: vessel-aware edits and the tools behind the Review dock.

- :mod:`.edits`: clean-up of components and hole filling;
- :mod:`.paths`: the brightest path between two points, painting on a projection;
- :mod:`.branch`, :mod:`.grow`: erase one branch, add a missed vessel from a click;
- :mod:`.review`: projected geometry, strokes and edits of the Review dock, free of Qt;
- :mod:`.autosave`: recovery files written in the background while a person paints.
"""
