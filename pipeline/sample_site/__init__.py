"""The demo website: a generated site of real-looking pages (`site.py`, `html.py`, `prose.py`)
and a small HTTP server for it (`server.py`). Not a stage: the demo crawls it."""
