"""``edge-watch``: a live view of a fleet of agents, from the MQTT messages they publish.

``state`` holds the fleet model, fed by the messages; ``table`` (terminal),
``web`` (dashboard) and the ``--json``/``--csv`` outputs of ``cli`` all read it.
"""

from __future__ import annotations
