"""One folder per app. Each runs alone (`python apps/<task>/app.py`) and inside `demohub serve`."""
