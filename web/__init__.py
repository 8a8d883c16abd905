"""The browser client (bridge-client.js) and the demo page (index.html, demo.js).

Not Python: this file only makes the directory the regular package ``bridge.web`` inside the
wheel (pyproject.toml maps ``web/`` there), so ``importlib.resources.files("bridge.web")``
finds the files in an installed wheel and in an editable install alike.
"""
